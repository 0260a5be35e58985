//! Owned contexts: which backends a default context brings up, and creating and dropping contexts
//! from many threads at once. A binary of its own: the OpenGL check reads the whole process's
//! mapped libraries, which no other test of this binary may load.

use wgpu_attention::context::DEFAULT_BACKENDS;
use wgpu_attention::{Context, ContextOptions};

/// Libraries of OpenGL (EGL, GLX, GLES) mapped into this process (Linux; elsewhere none is known).
fn mapped_gl_libraries() -> Vec<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut libs: Vec<String> = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|path| {
            let name = path.rsplit('/').next().unwrap_or(path);
            ["libEGL", "libGLX", "libGLESv2", "libGL."]
                .iter()
                .any(|gl| name.starts_with(gl))
        })
        .map(str::to_string)
        .collect();
    libs.sort();
    libs.dedup();
    libs
}

#[test]
fn default_contexts_never_start_opengl() {
    assert!(!DEFAULT_BACKENDS.contains(wgpu::Backends::GL));
    assert_eq!(ContextOptions::default().backends, DEFAULT_BACKENDS);
    if std::env::var_os("WGPU_BACKEND").is_none() {
        assert_eq!(ContextOptions::from_env().backends, DEFAULT_BACKENDS);
    }
    let ctx = Context::new().expect("an adapter of the default backends (lavapipe in CI)");
    let backend = ctx.info().adapter.as_ref().map(|a| a.backend);
    assert_ne!(backend, Some(wgpu::Backend::Gl), "{}", ctx.info().summary());
    // The GL backend loads libEGL when its instance is made: a default context must not.
    if std::env::var_os("WGPU_BACKEND").is_none() && cfg!(target_os = "linux") {
        assert_eq!(
            mapped_gl_libraries(),
            Vec::<String>::new(),
            "a default context loaded OpenGL"
        );
    }
}

/// Eight threads make and drop a context at once, twenty times (the teardown of one thread's
/// adapters must not disturb another's; wgpu-hal 30's EGL teardown panicked here when GL was on).
#[test]
fn contexts_made_and_dropped_from_eight_threads() {
    const THREADS: usize = 8;
    const ROUNDS: usize = 20;
    for round in 0..ROUNDS {
        let start = std::sync::Barrier::new(THREADS);
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    scope.spawn(|| {
                        start.wait();
                        let ctx = Context::with_options(&ContextOptions::default())?;
                        // A device that works: one small upload and read back.
                        let t = wgpu_attention::Tensor::from_slice(&ctx, &[1.0f32, 2.0, 3.0], &[3])?;
                        let back: Vec<f32> = t.to_vec(&ctx)?;
                        drop(t);
                        drop(ctx);
                        Ok::<_, wgpu_attention::Error>(back)
                    })
                })
                .collect();
            for (thread, handle) in handles.into_iter().enumerate() {
                let result = handle
                    .join()
                    .unwrap_or_else(|_| panic!("round {round}, thread {thread}: the thread panicked"));
                let back = result.unwrap_or_else(|e| panic!("round {round}, thread {thread}: {e}"));
                assert_eq!(back, [1.0, 2.0, 3.0], "round {round}, thread {thread}");
            }
        });
    }
    if std::env::var_os("WGPU_BACKEND").is_none() && cfg!(target_os = "linux") {
        assert_eq!(
            mapped_gl_libraries(),
            Vec::<String>::new(),
            "a default context loaded OpenGL"
        );
    }
}
