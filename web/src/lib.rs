//! The engine of the wgpu-attention benchmark page (`web/index.html`): the library compiled to
//! wasm32, on the browser's WebGPU, measuring and checking the same rows as
//! `wgpu-attention bench` and writing the same JSON. `scripts/build-web.sh` builds the page;
//! `scripts/test-web.sh` opens it in headless Chromium.
//!
//! main.js calls [`start`], then [`Page::check`] (the correctness table), then [`Page::row`] once
//! per benchmark row, and [`Page::report`] for the JSON download. Everything crosses as JSON text.

pub mod engine;

#[cfg(target_arch = "wasm32")]
mod page {
    use std::rc::Rc;

    use wasm_bindgen::prelude::*;
    use wgpu_attention::Context;

    use crate::engine::{Engine, RowSpec};

    /// The page's handle on its device.
    #[wasm_bindgen]
    pub struct Page {
        engine: Rc<Engine>,
    }

    fn js_error(e: impl std::fmt::Display) -> JsError {
        JsError::new(&e.to_string())
    }

    fn json(value: &impl serde::Serialize) -> Result<String, JsError> {
        serde_json::to_string(value).map_err(js_error)
    }

    /// Opens the browser's WebGPU adapter (rejects with the reason when there is none).
    #[wasm_bindgen]
    pub async fn start() -> Result<Page, JsError> {
        let ctx = Context::new_async().await.map_err(js_error)?;
        Ok(Page {
            engine: Rc::new(Engine::new(ctx).map_err(js_error)?),
        })
    }

    #[wasm_bindgen]
    impl Page {
        /// The adapter, its features, the timer and the fused designs, as JSON.
        pub fn adapter(&self) -> Result<String, JsError> {
            json(&self.engine.adapter())
        }

        /// Names the adapter from the browser's `GPUAdapterInfo` where wgpu reports no name.
        pub fn describe_adapter(&self, name: String, driver_info: String) {
            self.engine.describe_adapter(name, driver_info);
        }

        /// Resolves to the correctness table (JSON array).
        pub fn check(&self) -> js_sys::Promise {
            let engine = self.engine.clone();
            wasm_bindgen_futures::future_to_promise(async move {
                let rows = engine.check().await;
                Ok(json(&rows)?.into())
            })
        }

        /// Resolves to one measured row (JSON, `bench --json` row schema) for a row spec (JSON).
        pub fn row(&self, spec: String) -> js_sys::Promise {
            let engine = self.engine.clone();
            wasm_bindgen_futures::future_to_promise(async move {
                let spec: RowSpec = serde_json::from_str(&spec).map_err(js_error)?;
                let row = engine.row(&spec).await.map_err(js_error)?;
                Ok(json(&row)?.into())
            })
        }

        /// Every row so far as a `bench --json` report.
        pub fn report(&self) -> Result<String, JsError> {
            serde_json::to_string_pretty(&self.engine.report()).map_err(js_error)
        }

        /// Forgets the rows (before a new sweep).
        pub fn clear(&self) {
            self.engine.clear();
        }
    }
}
