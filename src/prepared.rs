//! A validated, fully prepared GPU call of any kernel family member: pipelines, bind groups and
//! outputs exist; [`Prepared::encode`] records the work into any command encoder, as often as
//! wanted. Multi-kernel members (e.g. multi-head attention) are split into named phases that can
//! be timed separately.

use crate::context::Context;
use crate::error::Result;
use crate::kernels::{self, Step};

/// A prepared call producing `O` (tensors that stay on the GPU).
#[derive(Debug)]
pub struct Prepared<O> {
    ctx: Context,
    steps: Vec<Step>,
    /// (name, end index into `steps`) of each phase, in order.
    phases: Vec<(&'static str, usize)>,
    output: O,
    allocated: u64,
    flops: f64,
}

impl<O> Prepared<O> {
    pub(crate) fn new(ctx: &Context, output: O) -> Self {
        Self {
            ctx: ctx.clone(),
            steps: Vec::new(),
            phases: Vec::new(),
            output,
            allocated: 0,
            flops: 0.0,
        }
    }

    /// Appends `steps` as phase `name` (merged with the previous phase of the same name).
    pub(crate) fn push(&mut self, name: &'static str, steps: Vec<Step>, allocated: u64, flops: f64) {
        self.steps.extend(steps);
        match self.phases.last_mut() {
            Some((last, end)) if *last == name => *end = self.steps.len(),
            _ => self.phases.push((name, self.steps.len())),
        }
        self.allocated += allocated;
        self.flops += flops;
    }

    /// Appends another prepared call's work as phase `name`, returning its output.
    pub(crate) fn absorb<P>(&mut self, name: &'static str, other: Prepared<P>) -> P {
        self.push(name, other.steps, other.allocated, other.flops);
        other.output
    }

    /// The recorded steps, the bytes allocated and the output (used by calls that keep their own
    /// steps, such as the staged backward's GEMMs).
    pub(crate) fn into_parts(self) -> (Vec<Step>, u64, O) {
        (self.steps, self.allocated, self.output)
    }

    /// Replaces the output (used while assembling multi-phase calls).
    pub(crate) fn with_output<P>(self, output: P) -> Prepared<P> {
        Prepared {
            ctx: self.ctx,
            steps: self.steps,
            phases: self.phases,
            output,
            allocated: self.allocated,
            flops: self.flops,
        }
    }

    /// Records the call into `encoder`.
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder) {
        kernels::encode_steps(encoder, &self.steps, None);
    }

    /// Records the call with timestamps `first` (start) and `first + 1` (end).
    pub fn encode_timed(&self, encoder: &mut wgpu::CommandEncoder, queries: &wgpu::QuerySet, first: u32) {
        kernels::encode_steps(encoder, &self.steps, Some((queries, first)));
    }

    /// Records only phase `index` (see [`Prepared::phases`]) with timestamps `first`, `first + 1`.
    /// Phases read what earlier phases wrote, so time them after a full run.
    pub fn encode_phase_timed(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        index: usize,
        queries: &wgpu::QuerySet,
        first: u32,
    ) {
        let start = if index == 0 { 0 } else { self.phases[index - 1].1 };
        let end = self.phases[index].1;
        kernels::encode_steps(encoder, &self.steps[start..end], Some((queries, first)));
    }

    /// Records and submits the call in one submission, capturing wgpu errors.
    pub fn submit(&self) -> Result<()> {
        self.ctx.scoped("submit", || {
            let mut enc = self.ctx.device().create_command_encoder(&Default::default());
            self.encode(&mut enc);
            self.ctx.queue().submit([enc.finish()]);
            Ok(())
        })
    }

    /// Submits the call and returns its outputs.
    pub fn run(self) -> Result<O> {
        self.submit()?;
        Ok(self.output)
    }

    /// Names of the phases, in recording order.
    pub fn phases(&self) -> Vec<&'static str> {
        self.phases.iter().map(|p| p.0).collect()
    }
    /// The outputs (valid after a submission has run).
    pub fn output(&self) -> &O {
        &self.output
    }
    /// Consumes the call, keeping its outputs.
    pub fn into_output(self) -> O {
        self.output
    }
    /// Bytes of device memory the call allocated (outputs, scratch, uniforms), not its inputs.
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated
    }
    /// Floating-point operations of one run (2 per multiply-add; attention by the FlashAttention
    /// convention).
    pub fn flops(&self) -> f64 {
        self.flops
    }
    /// Number of compute dispatches per run.
    pub fn dispatch_count(&self) -> usize {
        self.steps.iter().filter(|s| matches!(s, Step::Dispatch { .. })).count()
    }
}
