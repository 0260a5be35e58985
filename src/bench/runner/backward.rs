//! The `backward` row of an sdpa shape: the fused backward pass timed after a fused forward and
//! checked against the reference gradients on every KV-head group, or two of them whole.

use super::{add_note, Bench, Inputs, FIRST_CALL_NOTE};
use crate::attention::{Attention, Problem};
use crate::bench_record::{
    fill_metrics, macs, sdpa_bytes, set_check, CheckOptions, CheckPlan, KernelKind, Row, FULL_CHECK_MACS,
    HEAD_CHECK_MACS,
};
use crate::error::{Error, Result};
use crate::options::{AttentionOptions, KernelChoice};
use crate::reference::{self, HostInputs};
use crate::tensor::{DType, Tensor};

impl Bench<'_> {
    /// Times the fused backward pass after a fused forward (for O and LSE) with dO = 1 / √(Dv)
    /// everywhere; checks dV, dK and dQ against the reference gradients ([`backward_check_plan`]:
    /// all of them, or two KV-head groups whole).
    pub(super) fn backward_row(
        &self,
        row: &mut Row,
        p: &Problem,
        inputs: &Inputs,
        attn_opts: &AttentionOptions,
    ) -> Result<()> {
        let ctx = self.ctx;
        let opts = AttentionOptions {
            kernel: KernelChoice::Fused,
            return_lse: true,
            ..attn_opts.clone()
        };
        let staged = row.kernel == KernelKind::BackwardStaged;
        let [q, k, v] = &inputs.tensors;
        let dtype = q.dtype();
        let forward = Attention::new(ctx, q, k, v, &opts)?;
        forward.submit()?;
        let out = forward.into_output();
        let lse = out
            .lse
            .as_ref()
            .ok_or_else(|| Error::Unsupported("the forward returned no LSE".into()))?;
        let d_out_host = vec![1.0 / (p.dv as f32).sqrt(); p.b * p.hq * p.lq * p.dv];
        let d_out = match dtype {
            DType::F16 => {
                let h: Vec<half::f16> = d_out_host.iter().map(|&x| half::f16::from_f32(x)).collect();
                Tensor::from_slice(ctx, &h, &[p.b, p.hq, p.lq, p.dv])?
            }
            _ => Tensor::from_slice(ctx, &d_out_host, &[p.b, p.hq, p.lq, p.dv])?,
        };
        let backward_opts = AttentionOptions {
            kernel: if staged {
                KernelChoice::Staged
            } else {
                KernelChoice::Fused
            },
            ..opts.clone()
        };
        let call = crate::backward::AttentionBackward::new(ctx, q, k, v, &out.out, &d_out, lse, &backward_opts)?;
        if !staged {
            let c = crate::BackwardConfig::default_for(ctx, p.dk as u32, p.dv as u32)?;
            row.tile = Some(format!("wg{} rows{}", c.workgroup, c.rows));
            if self.opts.first_call {
                add_note(row, FIRST_CALL_NOTE);
            }
        }
        let call = call.into_prepared("backward");
        row.timer = self.timer.kind().label().into();
        row.alloc_bytes = Some(call.allocated_bytes());
        let timing = self.time(&call)?;
        // Q, K, V, O, dO read; dQ, dK, dV written.
        let bytes = 2 * sdpa_bytes(p, dtype) + (p.b * p.hq * p.lq * p.dv * dtype.size()) as u64;
        fill_metrics(row, call.flops(), bytes, &timing, self.peak);
        if !self.opts.check.enabled {
            row.checked = CheckOptions::SKIPPED.into();
            return Ok(());
        }
        let g = call.output();
        let got = [g.dq.to_f32_vec(ctx)?, g.dk.to_f32_vec(ctx)?, g.dv.to_f32_vec(ctx)?];
        let key_lengths = self.opts.key_lengths.as_deref();
        let Some(plan) = backward_check_plan(p) else {
            add_note(
                row,
                &format!(
                    "not checked: {} multiply-adds in two KV-head groups exceed the check limit of {HEAD_CHECK_MACS}",
                    backward_group_macs(p) * 2
                ),
            );
            return Ok(());
        };
        let mut checks = Vec::new();
        let group = p.hq / p.hkv;
        for &(b, kv) in &plan.groups {
            // The query heads of KV head `kv` and that head's keys and values: dK and dV sum over
            // every query row of the group, so the group is checked whole.
            let sub = Problem {
                b: 1,
                hq: group,
                hkv: 1,
                ..*p
            };
            let q_range = (b * p.hq + kv * group) * p.lq * p.dk..(b * p.hq + (kv + 1) * group) * p.lq * p.dk;
            let k_range = (b * p.hkv + kv) * p.lk * p.dk..(b * p.hkv + kv + 1) * p.lk * p.dk;
            let v_range = (b * p.hkv + kv) * p.lk * p.dv..(b * p.hkv + kv + 1) * p.lk * p.dv;
            let host = HostInputs {
                key_lengths: key_lengths.map(|l| &l[b..b + 1]),
                ..HostInputs::new(
                    sub,
                    &inputs.q[q_range.clone()],
                    &inputs.k[k_range.clone()],
                    &inputs.v[v_range.clone()],
                )
            };
            // dO is the same value everywhere: any slice of the right length is the group's.
            let d_out_sub = &d_out_host[..group * p.lq * p.dv];
            let expected = reference::sdpa_backward(&host, attn_opts, d_out_sub)?;
            checks.push(reference::compare(&got[0][q_range], &expected.dq, self.tol));
            checks.push(reference::compare(&got[1][k_range], &expected.dk, self.tol));
            checks.push(reference::compare(&got[2][v_range], &expected.dv, self.tol));
        }
        set_check(row, &checks, &plan.plan, self.tol);
        Ok(())
    }
}

/// The KV-head groups a backward row is checked on: every one up to [`FULL_CHECK_MACS`], else
/// the first and the last (b, KV head) with all of its query heads (dK and dV sum over them) when
/// those fit [`HEAD_CHECK_MACS`]; `None` beyond.
struct BackwardCheck {
    groups: Vec<(usize, usize)>,
    plan: CheckPlan,
}

fn backward_check_plan(p: &Problem) -> Option<BackwardCheck> {
    if macs(p) <= FULL_CHECK_MACS {
        return Some(BackwardCheck {
            groups: (0..p.b).flat_map(|b| (0..p.hkv).map(move |kv| (b, kv))).collect(),
            plan: CheckPlan::full("dq, dk, dv"),
        });
    }
    let mut groups = vec![(0, 0)];
    if p.b * p.hkv > 1 {
        groups.push((p.b - 1, p.hkv - 1));
    }
    let group = p.hq / p.hkv;
    let heads: Vec<(usize, usize)> = groups
        .iter()
        .flat_map(|&(b, kv)| (kv * group..(kv + 1) * group).map(move |h| (b, h)))
        .collect();
    (backward_group_macs(p) * groups.len() as u64 <= HEAD_CHECK_MACS).then(|| BackwardCheck {
        plan: CheckPlan {
            label: format!("dq, dk, dv of {} of {} heads", heads.len(), p.b * p.hq),
            subset: Some((heads, 0..p.lq)),
        },
        groups,
    })
}

/// Multiply-adds of the reference backward of one KV-head group (its query heads, every row).
fn backward_group_macs(p: &Problem) -> u64 {
    macs(&Problem {
        b: 1,
        hq: p.hq / p.hkv,
        hkv: 1,
        ..*p
    })
}
