//! Attention inside your own wgpu program: your device (with the features the fast paths use),
//! your buffers, your command encoder. The call is prepared once (validation, pipelines, bind
//! groups, outputs) and recorded into the encoder of every step.
//!
//! `cargo run --example borrowed`

use wgpu_attention::context::WANTED_FEATURES;
use wgpu_attention::reference::{self, HostInputs, Tolerance};
use wgpu_attention::{wgpu, Attention, AttentionOptions, Context, DType, Problem, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Your program's device (Vulkan, Metal or DX12). Ask for the features wgpu-attention can use
    // that the adapter has.
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::PRIMARY,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapter = pollster::block_on(instance.request_adapter(&Default::default()))?;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("my program"),
        required_features: adapter.features() & WANTED_FEATURES,
        required_limits: adapter.limits(),
        ..Default::default()
    }))?;
    let ctx = Context::from_device(&device, &queue); // borrows; installs nothing on the device
    println!("adapter: {}", ctx.info().summary());

    // Q, K and V packed one after another in one of your buffers.
    let p = Problem {
        b: 1,
        hq: 8,
        hkv: 8,
        lq: 64,
        lk: 64,
        dk: 64,
        dv: 64,
    };
    let n = p.b * p.hq * p.lq * p.dk;
    let host: Vec<f32> = (0..3 * n).map(|i| ((i * 7919) % 1009) as f32 / 1009.0 - 0.5).collect();
    let qkv = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("qkv"),
        size: (host.len() * 4) as u64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    queue.write_buffer(&qkv, 0, bytemuck::cast_slice(&host));
    let shape = [p.b, p.hq, p.lq, p.dk];
    let bytes = (n * 4) as u64;
    let q = Tensor::from_buffer(&qkv, 0, &shape, DType::F32)?;
    let k = Tensor::from_buffer(&qkv, bytes, &shape, DType::F32)?;
    let v = Tensor::from_buffer(&qkv, 2 * bytes, &shape, DType::F32)?;

    let opts = AttentionOptions::default();
    let call = Attention::new(&ctx, &q, &k, &v, &opts)?;
    for step in 0..3 {
        // Your own passes would be recorded here too; the attention reads the buffer as it is
        // when the encoder runs.
        let mut encoder = device.create_command_encoder(&Default::default());
        call.encode(&mut encoder);
        queue.submit([encoder.finish()]);
        println!("step {step}: recorded {} dispatch(es)", call.dispatch_count());
    }

    let out: Vec<f32> = call.output().out.to_vec(&ctx)?;
    let expected = reference::sdpa(&HostInputs::new(p, &host[..n], &host[n..2 * n], &host[2 * n..]), &opts);
    let check = reference::compare(&out, &expected.out, Tolerance::F32);
    println!("O {:?}: {check}", call.output().out.shape());
    if !check.ok() {
        return Err("GPU result differs from the CPU reference".into());
    }
    Ok(())
}
