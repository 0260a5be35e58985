//! The device the kernels run on: created by the crate ([`Context::new`]) or borrowed from the
//! caller ([`Context::from_device`]).

use std::future::Future;
use std::sync::Arc;
use std::task::{Poll, Waker};

use crate::error::{Error, Result};
use crate::pipeline::{DiskCache, PipelineCache};

/// Features the crate uses when the adapter offers them; none is required. `PIPELINE_CACHE`
/// persists compiled pipelines across processes (see [`crate::pipeline::PIPELINE_CACHE_ENV`]);
/// `PASSTHROUGH_SHADERS` (every Vulkan device) lets the crate hand Vulkan SPIR-V it wrote itself,
/// free of the layout decorations Vulkan forbids outside buffer memory, which wgpu 30's own
/// writer emits (wgpu issue 7696; without the feature the kernels take wgpu's path).
pub const WANTED_FEATURES: wgpu::Features = wgpu::Features::SHADER_F16
    .union(wgpu::Features::SUBGROUP)
    .union(wgpu::Features::TIMESTAMP_QUERY)
    .union(wgpu::Features::PIPELINE_CACHE)
    .union(wgpu::Features::PASSTHROUGH_SHADERS);

/// Features of the cooperative-matrix design (f16 A/B operands, f32 accumulators): an owned
/// context requests both when the adapter has both (see [`Context::from_adapter`]).
pub const COOPMAT_FEATURES: wgpu::Features =
    wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX.union(wgpu::Features::SHADER_F16);

/// How [`Context::with_options`] chooses an adapter. [`ContextOptions::from_env`] reads the
/// standard wgpu variables: `WGPU_BACKEND` (e.g. `vulkan`, `metal`, `dx12`, `gl`),
/// `WGPU_ADAPTER_NAME` (case-insensitive substring) and `WGPU_POWER_PREF` (`low`, `high`, `none`).
#[derive(Debug, Clone)]
pub struct ContextOptions {
    /// Backends to consider; default [`DEFAULT_BACKENDS`] (Vulkan, Metal, DX12 and the browser's
    /// WebGPU). OpenGL is started only when asked for, here or with `WGPU_BACKEND=gl`.
    pub backends: wgpu::Backends,
    /// Keep only adapters whose name contains this (case-insensitive).
    pub adapter_name: Option<String>,
    /// Power preference used to rank adapters.
    pub power_preference: wgpu::PowerPreference,
    /// Most compiled pipelines kept; the least recently used is dropped beyond it (default
    /// [`crate::pipeline::DEFAULT_CACHE_CAPACITY`]). Borrowed devices use the default; change it
    /// with [`PipelineCache::set_capacity`].
    pub pipeline_cache_capacity: usize,
}

/// The backends an owned context enumerates unless told otherwise: wgpu's first-tier APIs
/// (Vulkan, Metal, DX12, and WebGPU in the browser). OpenGL is left out: the kernels need
/// compute shaders that GL serves worse than the native APIs on the same machine, and bringing
/// up EGL only to drop its adapters again costs time and, in wgpu-hal 30, can panic in its
/// teardown when another thread holds an EGL context.
pub const DEFAULT_BACKENDS: wgpu::Backends = wgpu::Backends::PRIMARY;

impl Default for ContextOptions {
    fn default() -> Self {
        Self {
            backends: DEFAULT_BACKENDS,
            adapter_name: None,
            power_preference: wgpu::PowerPreference::HighPerformance,
            pipeline_cache_capacity: crate::pipeline::DEFAULT_CACHE_CAPACITY,
        }
    }
}

impl ContextOptions {
    /// Defaults overridden by `WGPU_BACKEND`, `WGPU_ADAPTER_NAME` and `WGPU_POWER_PREF`.
    pub fn from_env() -> Self {
        let d = Self::default();
        Self {
            backends: wgpu::Backends::from_env().unwrap_or(d.backends),
            adapter_name: std::env::var("WGPU_ADAPTER_NAME").ok().filter(|s| !s.is_empty()),
            power_preference: wgpu::PowerPreference::from_env().unwrap_or(d.power_preference),
            ..d
        }
    }
}

/// Adapter, features and limits of a context, for reports.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    /// Adapter information; `None` for a borrowed device whose adapter was not given.
    pub adapter: Option<wgpu::AdapterInfo>,
    /// Features granted to the device.
    pub features: wgpu::Features,
    /// Limits granted to the device.
    pub limits: wgpu::Limits,
    /// The adapter's cooperative-matrix configurations (`Adapter::cooperative_matrix_properties`);
    /// empty when the adapter has none or is unknown (a borrowed device without its adapter).
    pub cooperative_matrices: Vec<wgpu::CooperativeMatrixProperties>,
}

impl DeviceInfo {
    /// A one-line description: `name (backend, driver driver_info)`.
    pub fn summary(&self) -> String {
        match &self.adapter {
            Some(a) => format!(
                "{} ({:?}, {:?}, driver {} {})",
                a.name, a.backend, a.device_type, a.driver, a.driver_info
            ),
            None => "caller-provided device (adapter unknown)".to_string(),
        }
    }

    /// Square sizes M (= N = K) of the f16 × f16 → f32 cooperative-matrix products the device can
    /// run, ascending: the adapter lists the configuration, WGSL has a type for it (8×8, 16×16) and
    /// the device was granted [`COOPMAT_FEATURES`]. Empty otherwise.
    pub fn coopmat_f16_sizes(&self) -> Vec<u32> {
        if !self.features.contains(COOPMAT_FEATURES) {
            return Vec::new();
        }
        let mut sizes: Vec<u32> = self
            .cooperative_matrices
            .iter()
            .filter(|c| {
                c.ab_type == wgpu::CooperativeScalarType::F16
                    && c.cr_type == wgpu::CooperativeScalarType::F32
                    && c.m_size == c.n_size
                    && c.n_size == c.k_size
                    && matches!(c.m_size, 8 | 16)
            })
            .map(|c| c.m_size)
            .collect();
        sizes.sort_unstable();
        sizes.dedup();
        sizes
    }

    /// The largest of [`DeviceInfo::coopmat_f16_sizes`], the matrix size the cooperative-matrix
    /// kernels use; `None` when the device has no f16 → f32 cooperative matrices.
    pub fn coopmat_f16_size(&self) -> Option<u32> {
        self.coopmat_f16_sizes().last().copied()
    }
}

/// A wgpu device and queue plus the crate's pipeline cache.
///
/// Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

struct Inner {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: DeviceInfo,
    pipelines: PipelineCache,
    /// The persisted driver pipeline cache (own devices with `PIPELINE_CACHE` only).
    disk_cache: Option<DiskCache>,
    /// Error scopes the browser has not answered yet (see [`Context::wait_async`]).
    #[cfg(target_arch = "wasm32")]
    pending: std::sync::Mutex<web::PendingScopes>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("info", &self.inner.info.summary())
            .finish()
    }
}

#[cfg(not(target_arch = "wasm32"))]
const NO_ADAPTER_HINT: &str = "on Linux without a GPU install lavapipe: apt-get install -y mesa-vulkan-drivers";
#[cfg(target_arch = "wasm32")]
const NO_ADAPTER_HINT: &str =
    "the browser offers no WebGPU adapter (navigator.gpu missing or disabled; Chromium without a GPU needs --enable-unsafe-webgpu)";

/// Reports what no caller can receive: stderr on native, the browser console on the web (where
/// stderr goes nowhere).
fn log_error(message: &str) {
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("{message}");
    #[cfg(target_arch = "wasm32")]
    web_sys::console::error_1(&message.into());
}

/// Ranks adapters: discrete GPUs first (integrated first under low power), CPU last, and native
/// APIs (Vulkan, Metal, DX12) before OpenGL.
fn adapter_rank(info: &wgpu::AdapterInfo, power: wgpu::PowerPreference) -> (u8, u8) {
    use wgpu::DeviceType::*;
    let kind = match (info.device_type, power) {
        (IntegratedGpu, wgpu::PowerPreference::LowPower) => 0,
        (DiscreteGpu, _) => 0,
        (IntegratedGpu, _) => 1,
        (VirtualGpu, _) => 2,
        (Other, _) => 3,
        (Cpu, _) => 4,
    };
    let api = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    };
    (kind, api)
}

/// One wgpu instance per backend set for every owned context of the process. wgpu tells devices
/// apart by ids that are unique within an instance only, so owned devices from one instance are
/// what lets a tensor's device be checked against a context's (and an instance is costly to make).
#[cfg(not(target_arch = "wasm32"))]
fn shared_instance(backends: wgpu::Backends) -> wgpu::Instance {
    static INSTANCES: std::sync::Mutex<Vec<(wgpu::Backends, wgpu::Instance)>> = std::sync::Mutex::new(Vec::new());
    let mut instances = INSTANCES.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    instance_for(&mut instances, backends)
}

/// The browser's wgpu handles are JavaScript objects, bound to the one thread that made them.
#[cfg(target_arch = "wasm32")]
fn shared_instance(backends: wgpu::Backends) -> wgpu::Instance {
    thread_local! {
        static INSTANCES: std::cell::RefCell<Vec<(wgpu::Backends, wgpu::Instance)>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    INSTANCES.with_borrow_mut(|instances| instance_for(instances, backends))
}

fn instance_for(instances: &mut Vec<(wgpu::Backends, wgpu::Instance)>, backends: wgpu::Backends) -> wgpu::Instance {
    if let Some((_, instance)) = instances.iter().find(|(b, _)| *b == backends) {
        return instance.clone();
    }
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    instances.push((backends, instance.clone()));
    instance
}

/// A future whose panic is returned as a value (`std::panic::catch_unwind` for one poll at a time).
struct CatchPanic<F>(std::pin::Pin<Box<F>>);

impl<F: Future> Future for CatchPanic<F> {
    type Output = std::thread::Result<F::Output>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// The text of a panic payload (`panic!` carries a `&str` or a `String`).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

impl Context {
    /// Creates a device on the best adapter, honoring `WGPU_BACKEND`, `WGPU_ADAPTER_NAME` and
    /// `WGPU_POWER_PREF`. Requests every feature of [`WANTED_FEATURES`] the adapter has and the
    /// adapter's full limits. Native only: in the browser use [`Context::new_async`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new() -> Result<Self> {
        pollster::block_on(Self::new_async())
    }

    /// [`Context::new`] without blocking: the entry point in the browser (where the environment
    /// variables do not exist and the adapter is the browser's WebGPU adapter).
    pub async fn new_async() -> Result<Self> {
        Self::with_options_async(&ContextOptions::from_env()).await
    }

    /// Creates a device with explicit adapter-selection options. Native only: in the browser
    /// use [`Context::with_options_async`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn with_options(opts: &ContextOptions) -> Result<Self> {
        pollster::block_on(Self::with_options_async(opts))
    }

    /// [`Context::with_options`] without blocking.
    pub async fn with_options_async(opts: &ContextOptions) -> Result<Self> {
        // wgpu-hal can panic while it brings up or releases a backend's adapters (EGL's teardown
        // in wgpu-hal 30, when another thread holds an EGL context): that becomes an error here
        // instead of unwinding through the caller. The adapters not chosen are dropped inside.
        let chosen = CatchPanic(Box::pin(async {
            let instance = shared_instance(opts.backends);
            let mut adapters = instance.enumerate_adapters(opts.backends).await;
            if let Some(want) = &opts.adapter_name {
                let want = want.to_lowercase();
                adapters.retain(|a| a.get_info().name.to_lowercase().contains(&want));
            }
            adapters.retain(|a| {
                a.get_downlevel_capabilities()
                    .flags
                    .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
            });
            adapters.sort_by_key(|a| adapter_rank(&a.get_info(), opts.power_preference));
            adapters.into_iter().next()
        }))
        .await
        .map_err(|panic| {
            Error::NoAdapter(format!(
                "wgpu panicked while enumerating the adapters of backends {:?}: {}",
                opts.backends,
                panic_message(panic.as_ref())
            ))
        })?;
        let adapter = chosen.ok_or_else(|| {
            Error::NoAdapter(format!(
                "backends {:?}{}; {}",
                opts.backends,
                opts.adapter_name
                    .as_ref()
                    .map(|n| format!(", name containing {n:?}"))
                    .unwrap_or_default(),
                NO_ADAPTER_HINT
            ))
        })?;
        let ctx = Self::from_adapter_async(&adapter).await?;
        ctx.pipelines().set_capacity(opts.pipeline_cache_capacity);
        Ok(ctx)
    }

    /// Creates a device on a given adapter. Requests every feature of [`WANTED_FEATURES`] the
    /// adapter has, and [`COOPMAT_FEATURES`] when it has both (the cooperative-matrix design).
    /// Native only: in the browser use [`Context::from_adapter_async`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_adapter(adapter: &wgpu::Adapter) -> Result<Self> {
        pollster::block_on(Self::from_adapter_async(adapter))
    }

    /// [`Context::from_adapter`] without blocking.
    pub async fn from_adapter_async(adapter: &wgpu::Adapter) -> Result<Self> {
        let mut features = adapter.features() & WANTED_FEATURES;
        let coopmat = adapter.features().contains(COOPMAT_FEATURES);
        let experimental_features = if coopmat {
            features |= COOPMAT_FEATURES;
            // SAFETY: wgpu gates cooperative matrices behind experimental features because its
            // validation of them is incomplete: a shader that misuses them may reach the driver
            // unchecked. The crate's only such shaders are flash_coopmat.wgsl and gemm_coopmat.wgsl:
            // every cooperative load and store addresses their own workgroup arrays at offsets the
            // host bounds (blocks and head dims are multiples of the matrix size, checked before
            // dispatch; GEMM operands are staged there with zero padding), in loops
            // that are uniform per subgroup (naga checks it), on whole subgroups (the workgroup
            // size is checked to be a multiple of the subgroup size); its variants are validated
            // in tests without a GPU and run against the reference in the Mesa 26 lane.
            unsafe { wgpu::ExperimentalFeatures::enabled() }
        } else {
            wgpu::ExperimentalFeatures::disabled()
        };
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("wgpu-attention"),
                required_features: features,
                required_limits: adapter.limits(),
                experimental_features,
                ..Default::default()
            })
            .await?;
        // Our own device: every operation runs in an error scope, so anything uncaptured is a bug;
        // log it instead of wgpu's default panic.
        device.on_uncaptured_error(Arc::new(|e| {
            log_error(&format!("wgpu-attention: uncaptured wgpu error: {e}"))
        }));
        let info = adapter.get_info();
        let disk_cache = DiskCache::open(&device, &info);
        let coop = adapter.cooperative_matrix_properties();
        Ok(Self::build(device, queue, Some(info), coop, disk_cache))
    }

    /// Borrows a caller's device and queue. Nothing global is installed on them (no uncaptured
    /// error handler); errors of our work are captured with error scopes. The adapter is read from
    /// the device, so default tiles and the tuning cache are the same as for [`Context::new`] on
    /// that adapter. Request [`WANTED_FEATURES`] (those your adapter has) on your device for the
    /// fast paths: `SUBGROUP` for the cooperative K/V fetch, `SHADER_F16` for f16 tensors,
    /// `TIMESTAMP_QUERY` for GPU timings.
    ///
    /// Make one context per device and clone it (a cheap handle): clones share the pipeline
    /// cache, while each `from_device` call starts an empty one. (wgpu identifies devices by ids
    /// that are unique only within one `Instance`, so the crate cannot tell on its own that two
    /// borrowed handles are the same device.)
    ///
    /// The device's supported cooperative-matrix shapes are only known with its adapter: use
    /// [`Context::from_device_and_adapter`] for the cooperative-matrix design.
    pub fn from_device(device: &wgpu::Device, queue: &wgpu::Queue) -> Self {
        let info = device.adapter_info();
        let disk_cache = DiskCache::open(device, &info);
        Self::build(device.clone(), queue.clone(), Some(info), Vec::new(), disk_cache)
    }

    /// Like [`Context::from_device`], also reading the adapter's cooperative-matrix
    /// configurations, so that the cooperative-matrix design can run when the caller requested
    /// [`COOPMAT_FEATURES`] (with `wgpu::ExperimentalFeatures::enabled()`) on `device`.
    pub fn from_device_and_adapter(device: &wgpu::Device, queue: &wgpu::Queue, adapter: &wgpu::Adapter) -> Self {
        let info = adapter.get_info();
        let disk_cache = DiskCache::open(device, &info);
        let coop = adapter.cooperative_matrix_properties();
        Self::build(device.clone(), queue.clone(), Some(info), coop, disk_cache)
    }

    /// Like [`Context::from_device`], also recording the adapter's information for reports.
    pub fn from_device_with_adapter_info(device: &wgpu::Device, queue: &wgpu::Queue, info: wgpu::AdapterInfo) -> Self {
        Self::build(device.clone(), queue.clone(), Some(info), Vec::new(), None)
    }

    #[cfg_attr(
        target_arch = "wasm32",
        expect(
            clippy::arc_with_non_send_sync,
            reason = "the browser's wgpu handles are neither Send nor Sync; one Arc type serves both targets"
        )
    )]
    fn build(
        device: wgpu::Device,
        queue: wgpu::Queue,
        adapter: Option<wgpu::AdapterInfo>,
        cooperative_matrices: Vec<wgpu::CooperativeMatrixProperties>,
        disk_cache: Option<DiskCache>,
    ) -> Self {
        let info = DeviceInfo {
            adapter,
            features: device.features(),
            limits: device.limits(),
            cooperative_matrices,
        };
        Self {
            inner: Arc::new(Inner {
                device,
                queue,
                info,
                pipelines: PipelineCache::default(),
                disk_cache,
                #[cfg(target_arch = "wasm32")]
                pending: Default::default(),
            }),
        }
    }

    /// The wgpu device.
    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }
    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }
    /// Adapter, granted features and limits.
    pub fn info(&self) -> &DeviceInfo {
        &self.inner.info
    }
    /// Granted features.
    pub fn features(&self) -> wgpu::Features {
        self.inner.info.features
    }
    /// Granted limits.
    pub fn limits(&self) -> &wgpu::Limits {
        &self.inner.info.limits
    }

    /// The largest storage binding a kernel can use: the binding limit, capped by the buffer limit.
    pub fn max_binding_size(&self) -> u64 {
        let l = self.limits();
        l.max_storage_buffer_binding_size.min(l.max_buffer_size)
    }
    /// The pipeline cache shared by the clones of this context.
    pub fn pipelines(&self) -> &PipelineCache {
        &self.inner.pipelines
    }
    pub(crate) fn disk_cache(&self) -> Option<&DiskCache> {
        self.inner.disk_cache.as_ref()
    }

    /// Runs `f` inside validation and out-of-memory error scopes, turning captured errors into
    /// [`Error::Wgpu`]; a device lost before `f` (which then does not run) or during it gives
    /// [`Error::DeviceLost`].
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn scoped<T>(&self, during: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let oom = self.device().push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device().push_error_scope(wgpu::ErrorFilter::Validation);
        let out = self.probe_alive().then(f);
        let alive = out.is_some() && self.probe_alive();
        let v = pollster::block_on(validation.pop());
        let o = pollster::block_on(oom.pop());
        if let Some(source) = v.or(o) {
            return Err(Error::Wgpu { during, source });
        }
        match out {
            Some(out) if alive => out,
            _ => Err(Error::DeviceLost { during }),
        }
    }

    /// In the browser the error scopes answer later, from the event loop, and nothing may block
    /// for them: `f`'s own result is returned now, and a captured error by the next
    /// [`Context::wait_async`] or asynchronous download.
    #[cfg(target_arch = "wasm32")]
    pub(crate) fn scoped<T>(&self, during: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let oom = self.device().push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device().push_error_scope(wgpu::ErrorFilter::Validation);
        let out = self.probe_alive().then(f);
        let alive = out.is_some() && self.probe_alive();
        let mut pending = self
            .inner
            .pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        pending.push(during, validation.pop());
        pending.push(during, oom.pop());
        match out {
            Some(out) if alive => out,
            _ => Err(Error::DeviceLost { during }),
        }
    }

    /// Waits for the answers of every error scope opened so far and returns the first error
    /// they captured (each is reported once).
    #[cfg(target_arch = "wasm32")]
    async fn settle(&self) -> Result<()> {
        loop {
            let next = self
                .inner
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take_first();
            match next {
                web::Next::Error(e) => return Err(e),
                web::Next::Scope(during, scope) => {
                    if let Some(source) = scope.await {
                        return Err(Error::Wgpu { during, source });
                    }
                }
                web::Next::Done => return Ok(()),
            }
        }
    }

    /// Fails with [`Error::DeviceLost`] when the device is lost or destroyed (and with
    /// [`Error::Wgpu`] when it cannot even allocate 4 bytes).
    pub fn check_alive(&self, during: &'static str) -> Result<()> {
        self.scoped(during, || Ok(()))
    }

    /// Whether the device still accepts work.
    ///
    /// wgpu reports nothing for work on a lost device (its errors are dropped, as WebGPU
    /// specifies) and the device-lost callback is the owner's to install, so this probes: a
    /// 4-byte buffer mapped at creation has no mapped range on a lost device. The probe is only
    /// dropped, never used otherwise, so nothing is reported to the device's error handler; run
    /// it inside error scopes (an allocation failure would be reported).
    fn probe_alive(&self) -> bool {
        let probe = self.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgpu-attention device probe"),
            size: 4,
            usage: wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: true,
        });
        let alive = probe.slice(..).get_mapped_range_mut().is_ok();
        drop(probe);
        alive
    }

    /// Checks a buffer allocation against `max_buffer_size`.
    pub(crate) fn check_buffer_size(&self, what: &str, size: u64) -> Result<()> {
        let max = self.limits().max_buffer_size;
        if size > max {
            return Err(Error::Limit {
                what: what.to_string(),
                limit: "max_buffer_size",
                needed: size,
                max,
            });
        }
        Ok(())
    }

    /// Blocks until all submitted work is done. Native only: in the browser use
    /// [`Context::wait_async`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wait(&self) -> Result<()> {
        pollster::block_on(self.wait_async())
    }

    /// Resolves when all submitted work is done. In the browser it yields to the event loop
    /// meanwhile and also reports the first wgpu error captured since the last such call (there,
    /// operations return before the browser has validated their work); on native the device is
    /// polled to completion before the future first returns, as in [`Context::wait`].
    pub async fn wait_async(&self) -> Result<()> {
        // Native: the blocking poll returns once everything is done.
        self.drive()?;
        #[cfg(target_arch = "wasm32")]
        {
            let (done, finished) = oneshot();
            self.queue().on_submitted_work_done(move || done.send(()));
            finished.await;
        }
        self.finish("wait").await
    }

    /// Copies `size` bytes at `offset` of `buffer` (which needs `COPY_SRC`; offset and size
    /// multiples of 4) to the host, for buffers that are not tensors (e.g. resolved timestamp
    /// queries). Tensors have [`crate::Tensor::to_vec_async`].
    pub async fn read_buffer_async(&self, buffer: &wgpu::Buffer, offset: u64, size: u64) -> Result<Vec<u8>> {
        let staging = self.scoped("readback", || {
            let staging = self.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-attention readback"),
                size,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut enc = self.device().create_command_encoder(&Default::default());
            enc.copy_buffer_to_buffer(buffer, offset, &staging, 0, size);
            self.queue().submit([enc.finish()]);
            Ok(staging)
        })?;
        let (mapped, on_mapped) = oneshot();
        staging
            .slice(..)
            .map_async(wgpu::MapMode::Read, move |r| mapped.send(r));
        self.drive()?;
        let mapping = on_mapped.await;
        // Errors of the work that produced the data come first: they explain a failed mapping.
        self.finish("readback").await?;
        mapping.ok_or_else(|| Error::Unsupported("map callback dropped".into()))??;
        let data = staging.slice(..).get_mapped_range()?.to_vec();
        staging.unmap();
        Ok(data)
    }

    /// Makes the device run its callbacks: a blocking poll on native; the browser runs them from
    /// its event loop.
    fn drive(&self) -> Result<()> {
        #[cfg(not(target_arch = "wasm32"))]
        self.device().poll(wgpu::PollType::wait_indefinitely())?;
        Ok(())
    }

    /// After completed work: a lost device "completes" everything, so say so instead of
    /// reporting success; in the browser, also the errors its scopes captured meanwhile.
    async fn finish(&self, during: &'static str) -> Result<()> {
        #[cfg(target_arch = "wasm32")]
        self.settle().await?;
        self.check_alive(during)
    }
}

type Slot<T> = Arc<std::sync::Mutex<(Option<Option<T>>, Option<Waker>)>>;

/// The sending half of [`oneshot`]; dropped unsent (a callback wgpu discards), it delivers
/// `None`, so that nothing waits forever.
struct Sender<T>(Option<Slot<T>>);

impl<T> Sender<T> {
    fn send(mut self, value: T) {
        self.deliver(Some(value));
    }
    fn deliver(&mut self, value: Option<T>) {
        if let Some(slot) = self.0.take() {
            let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
            s.0 = Some(value);
            if let Some(waker) = s.1.take() {
                waker.wake();
            }
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.deliver(None);
    }
}

/// A future for the value a wgpu callback delivers (a buffer mapping, finished work).
fn oneshot<T>() -> (Sender<T>, impl Future<Output = Option<T>>) {
    let slot: Slot<T> = Arc::new(std::sync::Mutex::new((None, None)));
    let sender = Sender(Some(slot.clone()));
    let receive = std::future::poll_fn(move |cx| {
        let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
        match s.0.take() {
            Some(value) => Poll::Ready(value),
            None => {
                s.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    });
    (sender, receive)
}

/// Error scopes in the browser, whose answers arrive from its event loop.
#[cfg(target_arch = "wasm32")]
mod web {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    use crate::error::Error;

    type Scope = Pin<Box<dyn Future<Output = Option<wgpu::Error>>>>;

    /// The scopes not yet answered, oldest first, and the first error already answered.
    #[derive(Default)]
    pub(super) struct PendingScopes {
        scopes: Vec<(&'static str, Scope)>,
        error: Option<Error>,
    }

    pub(super) enum Next {
        Error(Error),
        Scope(&'static str, Scope),
        Done,
    }

    impl PendingScopes {
        /// Adds a scope, first dropping those already answered (keeping the first error), so
        /// that a program that never waits does not accumulate them.
        pub(super) fn push(
            &mut self,
            during: &'static str,
            scope: impl Future<Output = Option<wgpu::Error>> + 'static,
        ) {
            let mut cx = Context::from_waker(Waker::noop());
            let error = &mut self.error;
            self.scopes
                .retain_mut(|(during, scope)| match scope.as_mut().poll(&mut cx) {
                    Poll::Pending => true,
                    Poll::Ready(captured) => {
                        if let (None, Some(source)) = (&error, captured) {
                            *error = Some(Error::Wgpu { during, source });
                        }
                        false
                    }
                });
            self.scopes.push((during, Box::pin(scope)));
        }

        /// The error already answered, else the oldest scope to wait for.
        pub(super) fn take_first(&mut self) -> Next {
            if let Some(e) = self.error.take() {
                return Next::Error(e);
            }
            if self.scopes.is_empty() {
                return Next::Done;
            }
            let (during, scope) = self.scopes.remove(0);
            Next::Scope(during, scope)
        }
    }
}
