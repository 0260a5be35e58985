//! The rows of the attention family's other variants (everything but sdpa) for one shape.

use super::{add_note, empty_row, gemm_split, row_kinds, variant_causals, Bench, REFERENCE_MACS};
use crate::attention::Problem;
use crate::bench::variant::{self, Variant, VariantInputs, VariantParams};
use crate::bench_record::{causal_label, fill_metrics, set_check, CheckOptions, CheckPlan, KernelKind, Row};
use crate::error::Result;
use crate::options::{AttentionOptions, KernelChoice};
use crate::timer::time_host;

impl Bench<'_> {
    /// The rows of another variant for one shape: seeded inputs after the mapping of
    /// [`variant::bench_help`], checked in full when the reference is cheap enough.
    pub(super) fn variant_shape(&mut self, v: Variant, p: &Problem, seed: u64) {
        let (ctx, opts) = (self.ctx, self.opts);
        let inputs = variant::random_inputs(ctx, v, p, opts.da.unwrap_or(p.dk), opts.dtype, seed);
        for causal in variant_causals(v, &self.causals) {
            let params = VariantParams {
                attention: self.attention_options(causal),
                half_width: opts.half_width,
                ..Default::default()
            };
            for kernel in row_kinds(v, &opts.kernels) {
                self.bar
                    .set_message(format!("{v} {} {p} causal={}", kernel.name(), causal_label(causal)));
                let mut row = empty_row(v, kernel, p, opts.dtype, causal, opts);
                if !v.takes_attention_options() {
                    row.window = None;
                }
                match &inputs {
                    Err(e) => add_note(&mut row, &format!("inputs: {e}")),
                    Ok(inputs) => {
                        let mut shapes = inputs.describe();
                        if matches!(v, Variant::LocalM | Variant::LocalP) {
                            shapes += &format!(", W={}", params.half_width);
                        }
                        add_note(&mut row, &shapes);
                        if let Err(e) = self.variant_row(&mut row, inputs, &params) {
                            add_note(&mut row, &e.to_string());
                        }
                    }
                }
                self.push(row);
            }
        }
    }

    fn variant_row(&self, row: &mut Row, inputs: &VariantInputs, params: &VariantParams) -> Result<()> {
        let params = VariantParams {
            attention: AttentionOptions {
                kernel: match row.kernel {
                    KernelKind::Fused => KernelChoice::Fused,
                    KernelKind::Staged => KernelChoice::Staged,
                    KernelKind::Decode => KernelChoice::Decode,
                    _ => KernelChoice::Auto,
                },
                ..params.attention.clone()
            },
            ..params.clone()
        };
        // The reference row prepares the GPU call too: it validates the inputs and counts the FLOPs.
        let call = variant::prepare(self.ctx, inputs, &params)?;
        let macs = call.flops() / 2.0;
        if row.kernel == KernelKind::Reference {
            row.timer = "wall-clock".into();
            if macs > REFERENCE_MACS as f64 {
                add_note(
                    row,
                    &format!("skipped: {macs:.0} multiply-adds exceed the reference limit of {REFERENCE_MACS}"),
                );
                return Ok(());
            }
            let mut result = Ok(Vec::new());
            let timing = time_host(self.opts.iters.min(3), || {
                result = variant::reference(inputs, &params, None);
            });
            result?;
            fill_metrics(row, call.flops(), 0, &timing, None);
            row.gbps = None;
            add_note(row, "CPU f64 reference, wall clock");
            return Ok(());
        }
        row.timer = self.timer.kind().label().into();
        row.alloc_bytes = Some(call.allocated_bytes());
        let timing = self.time(&call)?;
        // Every input read and every output written once.
        let outputs = call.output().iter().map(|(_, t)| t.numel() * t.dtype().size());
        let bytes = inputs.bytes() + outputs.sum::<usize>() as u64;
        fill_metrics(row, call.flops(), bytes, &timing, self.peak);
        match self.time_phases(&call) {
            Ok(phases) => row.phases_ms = phases,
            Err(e) => add_note(row, &format!("phases: {e}")),
        }
        if row.variant == Variant::Mha.name() {
            add_note(row, &gemm_split(self.ctx, row.phases_ms.as_deref()));
        }
        if !self.opts.check.enabled {
            row.checked = CheckOptions::SKIPPED.into();
            return Ok(());
        }
        // A member's outputs are compared whole (no subset of heads), up to the size the reference
        // row itself runs at.
        if macs > REFERENCE_MACS as f64 {
            add_note(
                row,
                &format!("not checked: {macs:.0} multiply-adds exceed the reference limit of {REFERENCE_MACS}"),
            );
            return Ok(());
        }
        let got = variant::download(self.ctx, call.output())?;
        let expected = variant::reference(inputs, &params, Some(&got))?;
        let tol = self.opts.check.scale(inputs.tolerance());
        let comparisons = variant::compare_outputs(&got, &expected, tol)?;
        set_check(row, comparisons.iter().map(|(_, c)| c), &CheckPlan::full("all"), tol);
        Ok(())
    }
}
