//! The device the kernels run on: created by the crate ([`Context::new`]) or borrowed from the
//! caller ([`Context::from_device`]).

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::pipeline::{DiskCache, PipelineCache};

/// Features the crate uses when the adapter offers them; none is required. `PIPELINE_CACHE`
/// persists compiled pipelines across processes (see [`crate::pipeline::PIPELINE_CACHE_ENV`]).
pub const WANTED_FEATURES: wgpu::Features = wgpu::Features::SHADER_F16
    .union(wgpu::Features::SUBGROUP)
    .union(wgpu::Features::TIMESTAMP_QUERY)
    .union(wgpu::Features::PIPELINE_CACHE);

/// Features of the cooperative-matrix design (f16 A/B operands, f32 accumulators): an owned
/// context requests both when the adapter has both (see [`Context::from_adapter`]).
pub const COOPMAT_FEATURES: wgpu::Features =
    wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX.union(wgpu::Features::SHADER_F16);

/// How [`Context::with_options`] chooses an adapter. [`ContextOptions::from_env`] reads the
/// standard wgpu variables: `WGPU_BACKEND` (e.g. `vulkan`, `metal`, `dx12`, `gl`),
/// `WGPU_ADAPTER_NAME` (case-insensitive substring) and `WGPU_POWER_PREF` (`low`, `high`, `none`).
#[derive(Debug, Clone)]
pub struct ContextOptions {
    /// Backends to consider.
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

impl Default for ContextOptions {
    fn default() -> Self {
        Self {
            backends: wgpu::Backends::all(),
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
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("info", &self.inner.info.summary())
            .finish()
    }
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
fn shared_instance(backends: wgpu::Backends) -> wgpu::Instance {
    static INSTANCES: std::sync::Mutex<Vec<(wgpu::Backends, wgpu::Instance)>> = std::sync::Mutex::new(Vec::new());
    let mut instances = INSTANCES.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
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

impl Context {
    /// Creates a device on the best adapter, honoring `WGPU_BACKEND`, `WGPU_ADAPTER_NAME` and
    /// `WGPU_POWER_PREF`. Requests every feature of [`WANTED_FEATURES`] the adapter has and the
    /// adapter's full limits.
    pub fn new() -> Result<Self> {
        Self::with_options(&ContextOptions::from_env())
    }

    /// Creates a device with explicit adapter-selection options.
    pub fn with_options(opts: &ContextOptions) -> Result<Self> {
        let instance = shared_instance(opts.backends);
        let mut adapters = pollster::block_on(instance.enumerate_adapters(opts.backends));
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
        let adapter = adapters.into_iter().next().ok_or_else(|| {
            Error::NoAdapter(format!(
                "backends {:?}{}; on Linux without a GPU install lavapipe: apt-get install -y mesa-vulkan-drivers",
                opts.backends,
                opts.adapter_name
                    .as_ref()
                    .map(|n| format!(", name containing {n:?}"))
                    .unwrap_or_default()
            ))
        })?;
        let ctx = Self::from_adapter(&adapter)?;
        ctx.pipelines().set_capacity(opts.pipeline_cache_capacity);
        Ok(ctx)
    }

    /// Creates a device on a given adapter. Requests every feature of [`WANTED_FEATURES`] the
    /// adapter has, and [`COOPMAT_FEATURES`] when it has both (the cooperative-matrix design).
    pub fn from_adapter(adapter: &wgpu::Adapter) -> Result<Self> {
        let mut features = adapter.features() & WANTED_FEATURES;
        let coopmat = adapter.features().contains(COOPMAT_FEATURES);
        let experimental_features = if coopmat {
            features |= COOPMAT_FEATURES;
            // SAFETY: wgpu gates cooperative matrices behind experimental features because its
            // validation of them is incomplete: a shader that misuses them may reach the driver
            // unchecked. The crate's only such shader is flash_coopmat.wgsl: every cooperative
            // load and store addresses its own workgroup arrays at offsets the host bounds (blocks
            // and head dims are multiples of the matrix size, checked before dispatch), in loops
            // that are uniform per subgroup (naga checks it), on whole subgroups (the workgroup
            // size is checked to be a multiple of the subgroup size); its variants are validated
            // in tests without a GPU and run against the reference in the Mesa 26 lane.
            unsafe { wgpu::ExperimentalFeatures::enabled() }
        } else {
            wgpu::ExperimentalFeatures::disabled()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("wgpu-attention"),
            required_features: features,
            required_limits: adapter.limits(),
            experimental_features,
            ..Default::default()
        }))?;
        // Our own device: every operation runs in an error scope, so anything uncaptured is a bug;
        // log it instead of wgpu's default panic.
        device.on_uncaptured_error(Arc::new(|e| eprintln!("wgpu-attention: uncaptured wgpu error: {e}")));
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

    /// Blocks until all submitted work is done.
    pub fn wait(&self) -> Result<()> {
        self.device().poll(wgpu::PollType::wait_indefinitely())?;
        // A lost device "completes" everything: say so instead of reporting success.
        self.check_alive("wait")
    }

    /// Copies `size` bytes at `offset` of `buffer` (which needs `COPY_SRC`) to the host.
    pub(crate) fn read_buffer(&self, buffer: &wgpu::Buffer, offset: u64, size: u64) -> Result<Vec<u8>> {
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
        let (tx, rx) = std::sync::mpsc::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv()
            .map_err(|_| Error::Unsupported("map callback dropped".into()))??;
        let data = staging.slice(..).get_mapped_range()?.to_vec();
        staging.unmap();
        Ok(data)
    }
}
