//! `info`: the adapter, backend, driver, granted features, cooperative matrices and key limits.

use anyhow::Result;

use crate::call::context;

pub fn info() -> Result<()> {
    let ctx = context()?;
    let i = ctx.info();
    match &i.adapter {
        Some(a) => {
            println!("adapter:      {}", a.name);
            println!("backend:      {:?}", a.backend);
            println!("device type:  {:?}", a.device_type);
            println!("driver:       {} {}", a.driver, a.driver_info);
            println!("vendor/device: {:#06x}/{:#06x}", a.vendor, a.device);
            println!(
                "subgroups:    {}..{} invocations",
                a.subgroup_min_size, a.subgroup_max_size
            );
        }
        None => println!("adapter:      unknown"),
    }
    println!("features:     {:?}", i.features);
    // M×N×K, A/B type → C type; wgpu lists subgroup-scope configurations only.
    if i.cooperative_matrices.is_empty() {
        println!("cooperative matrices: none");
    } else {
        println!("cooperative matrices (subgroup scope):");
        for c in &i.cooperative_matrices {
            println!(
                "  {}x{}x{}  A/B {:?} -> C {:?}{}",
                c.m_size,
                c.n_size,
                c.k_size,
                c.ab_type,
                c.cr_type,
                if c.saturating_accumulation { " (saturating)" } else { "" }
            );
        }
    }
    match i.coopmat_f16_size() {
        Some(m) => println!("coopmat design: {m}x{m}x{m} f16 -> f32"),
        None => println!("coopmat design: unavailable (needs f16 -> f32 cooperative matrices)"),
    }
    let l = &i.limits;
    println!("limits:");
    println!("  max_buffer_size                       {}", l.max_buffer_size);
    println!(
        "  max_storage_buffer_binding_size       {}",
        l.max_storage_buffer_binding_size
    );
    println!(
        "  max_storage_buffers_per_shader_stage  {}",
        l.max_storage_buffers_per_shader_stage
    );
    println!(
        "  max_compute_workgroup_storage_size    {}",
        l.max_compute_workgroup_storage_size
    );
    println!(
        "  max_compute_invocations_per_workgroup {}",
        l.max_compute_invocations_per_workgroup
    );
    println!(
        "  max_compute_workgroup_size            {}x{}x{}",
        l.max_compute_workgroup_size_x, l.max_compute_workgroup_size_y, l.max_compute_workgroup_size_z
    );
    println!(
        "  max_compute_workgroups_per_dimension  {}",
        l.max_compute_workgroups_per_dimension
    );
    println!(
        "  min_storage_buffer_offset_alignment   {}",
        l.min_storage_buffer_offset_alignment
    );
    Ok(())
}
