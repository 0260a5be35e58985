//! Shader composition: each kernel's entry file in `shaders/` names its own recipe, and this
//! module only follows it.
//!
//! The directives are WGSL line comments, so every file stays valid WGSL text:
//! - `//@switches NAME …` (entry files, once, first): the source-level switches the kernel takes,
//!   among [`Switches::NAMES`]; the host's values come from the permutation table.
//! - `//@import PATH`: the file `shaders/PATH`, once per composition (a second import of the same
//!   file adds nothing, so pieces may import what they use).
//! - `//@if NAME` / `//@if !NAME` … `//@else` … `//@endif`: keeps one branch by a switch's value
//!   (non-zero is true); blocks nest.
//! - `//@each_row` … `//@end_row` and `//@each_lane` … `//@end_lane`: the block repeated `rows`
//!   (or `subgroup`) times with `{r}` (or `{l}`) replaced by 0, 1, ….
//!
//! Composition fails, naming the file and line, on an unknown import, directive or switch, an
//! unclosed or stray block, a switch given a value that the entry does not declare, and a declared
//! switch nothing reads. A prelude fixes the element type (`alias elem`, `ELEM_F16`) and the
//! numeric switches as constants (`ROWS`, `SUBGROUP`, `SLOTS`, the cooperative-matrix `CM` and
//! its types). The composed text marks with `//#line FILE LINE` every place where it stops
//! following one file line by line, so [`source_location`] maps any line of it, and any compiler
//! message, back to `shaders/FILE:LINE`.

use std::collections::HashSet;

use crate::tensor::DType;

/// Every WGSL file of the crate by its path under `shaders/`.
pub const FILES: &[(&str, &str)] = &[
    (
        "additive_hidden.wgsl",
        include_str!("../../shaders/additive_hidden.wgsl"),
    ),
    ("decode_merge.wgsl", include_str!("../../shaders/decode_merge.wgsl")),
    (
        "flash_backward_bias.wgsl",
        include_str!("../../shaders/flash_backward_bias.wgsl"),
    ),
    (
        "flash_backward_ds.wgsl",
        include_str!("../../shaders/flash_backward_ds.wgsl"),
    ),
    (
        "flash_backward_kv.wgsl",
        include_str!("../../shaders/flash_backward_kv.wgsl"),
    ),
    (
        "flash_backward_pre.wgsl",
        include_str!("../../shaders/flash_backward_pre.wgsl"),
    ),
    (
        "flash_backward_q.wgsl",
        include_str!("../../shaders/flash_backward_q.wgsl"),
    ),
    ("flash_coopmat.wgsl", include_str!("../../shaders/flash_coopmat.wgsl")),
    ("flash_decode.wgsl", include_str!("../../shaders/flash_decode.wgsl")),
    (
        "flash_decode_lanes.wgsl",
        include_str!("../../shaders/flash_decode_lanes.wgsl"),
    ),
    ("flash_forward.wgsl", include_str!("../../shaders/flash_forward.wgsl")),
    ("flash_tiled.wgsl", include_str!("../../shaders/flash_tiled.wgsl")),
    ("gemm.wgsl", include_str!("../../shaders/gemm.wgsl")),
    ("gemm_coopmat.wgsl", include_str!("../../shaders/gemm_coopmat.wgsl")),
    ("gemm_register.wgsl", include_str!("../../shaders/gemm_register.wgsl")),
    ("hard_attention.wgsl", include_str!("../../shaders/hard_attention.wgsl")),
    ("kv_write.wgsl", include_str!("../../shaders/kv_write.wgsl")),
    ("masked_softmax.wgsl", include_str!("../../shaders/masked_softmax.wgsl")),
    ("peak_bandwidth.wgsl", include_str!("../../shaders/peak_bandwidth.wgsl")),
    ("peak_fma.wgsl", include_str!("../../shaders/peak_fma.wgsl")),
    ("pool.wgsl", include_str!("../../shaders/pool.wgsl")),
    ("qk_scores.wgsl", include_str!("../../shaders/qk_scores.wgsl")),
    ("side_gather.wgsl", include_str!("../../shaders/side_gather.wgsl")),
    ("weighted_sum.wgsl", include_str!("../../shaders/weighted_sum.wgsl")),
    ("common/alibi.wgsl", include_str!("../../shaders/common/alibi.wgsl")),
    ("common/centers.wgsl", include_str!("../../shaders/common/centers.wgsl")),
    (
        "common/decode_parts.wgsl",
        include_str!("../../shaders/common/decode_parts.wgsl"),
    ),
    (
        "common/fetch_plain.wgsl",
        include_str!("../../shaders/common/fetch_plain.wgsl"),
    ),
    (
        "common/fetch_subgroup.wgsl",
        include_str!("../../shaders/common/fetch_subgroup.wgsl"),
    ),
    ("common/gemm_io.wgsl", include_str!("../../shaders/common/gemm_io.wgsl")),
    (
        "common/gemm_tile.wgsl",
        include_str!("../../shaders/common/gemm_tile.wgsl"),
    ),
    (
        "common/grad_do_direct.wgsl",
        include_str!("../../shaders/common/grad_do_direct.wgsl"),
    ),
    (
        "common/grad_do_direct_vec4.wgsl",
        include_str!("../../shaders/common/grad_do_direct_vec4.wgsl"),
    ),
    (
        "common/grad_do_records.wgsl",
        include_str!("../../shaders/common/grad_do_records.wgsl"),
    ),
    ("common/grad_io.wgsl", include_str!("../../shaders/common/grad_io.wgsl")),
    (
        "common/grad_prob.wgsl",
        include_str!("../../shaders/common/grad_prob.wgsl"),
    ),
    ("common/grid.wgsl", include_str!("../../shaders/common/grid.wgsl")),
    (
        "common/kv_contiguous.wgsl",
        include_str!("../../shaders/common/kv_contiguous.wgsl"),
    ),
    (
        "common/kv_paged.wgsl",
        include_str!("../../shaders/common/kv_paged.wgsl"),
    ),
    (
        "common/load_scalar.wgsl",
        include_str!("../../shaders/common/load_scalar.wgsl"),
    ),
    (
        "common/load_vec4.wgsl",
        include_str!("../../shaders/common/load_vec4.wgsl"),
    ),
    (
        "common/loops_compact.wgsl",
        include_str!("../../shaders/common/loops_compact.wgsl"),
    ),
    (
        "common/loops_unrolled.wgsl",
        include_str!("../../shaders/common/loops_unrolled.wgsl"),
    ),
    ("common/mask.wgsl", include_str!("../../shaders/common/mask.wgsl")),
    (
        "common/no_alibi.wgsl",
        include_str!("../../shaders/common/no_alibi.wgsl"),
    ),
    (
        "common/no_centers.wgsl",
        include_str!("../../shaders/common/no_centers.wgsl"),
    ),
    ("common/params.wgsl", include_str!("../../shaders/common/params.wgsl")),
    ("common/philox.wgsl", include_str!("../../shaders/common/philox.wgsl")),
    (
        "common/row_block.wgsl",
        include_str!("../../shaders/common/row_block.wgsl"),
    ),
    (
        "common/score_additive.wgsl",
        include_str!("../../shaders/common/score_additive.wgsl"),
    ),
    (
        "common/score_dot.wgsl",
        include_str!("../../shaders/common/score_dot.wgsl"),
    ),
    ("common/side.wgsl", include_str!("../../shaders/common/side.wgsl")),
    (
        "common/side_records.wgsl",
        include_str!("../../shaders/common/side_records.wgsl"),
    ),
];

/// The crate's shader file at `path` (relative to `shaders/`).
pub fn file(path: &str) -> Option<&'static str> {
    FILES.iter().find(|(p, _)| *p == path).map(|(_, text)| *text)
}

/// The values of a kernel's source-level switches: what override constants cannot express (WGSL
/// needs constant sizes for per-invocation arrays and fixed binding types). The entry file
/// declares which it takes (`//@switches`); the permutation table lists the values each takes.
/// Part of the pipeline cache key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Switches {
    /// Query rows per invocation (`ROWS`): `//@each_row` blocks are repeated this many times.
    pub rows: u32,
    /// vec4 loads of aligned operands (`common/load_vec4.wgsl`) instead of scalar loads.
    pub vec4_io: bool,
    /// Fixed subgroup size (`SUBGROUP`, `//@each_lane` blocks); 0: no subgroup operations.
    pub subgroup: u32,
    /// Additive (Bahdanau) score instead of the dot product.
    pub additive: bool,
    /// Local-p positions binding.
    pub local: bool,
    /// ALiBi slopes binding.
    pub alibi: bool,
    /// K/V rows read through a block table (paged KV cache).
    pub paged: bool,
    /// Cooperative-matrix size M (M×M×M, f16 × f16 → f32): the prelude enables
    /// `wgpu_cooperative_matrix` and defines `CM` and the `coop_a`/`coop_b`/`coop_c` types.
    pub coop: u32,
    /// Per-invocation accumulator vec4s of the tiled design (`SLOTS`).
    pub slots: u32,
    /// Head-dim loops bounded by the uniform (`common/loops_compact.wgsl`) instead of the
    /// override constants: the backward's quick first-call code on CPU drivers.
    pub compact: bool,
}

impl Switches {
    /// The switch names the directives use, in field order.
    pub const NAMES: [&'static str; 11] = [
        "rows", "vec4_io", "subgroup", "additive", "local", "alibi", "paged", "coop", "slots", "compact", "direct",
    ];

    /// These switches with `name` set to `value` (booleans as 0 or 1). `direct` is not a field: it
    /// names a kernel ([`super::Kernel::named`]).
    pub fn with(mut self, name: &str, value: u32) -> Result<Self, String> {
        let flag = |v: u32| match v {
            0 | 1 => Ok(v == 1),
            _ => Err(format!("switch `{name}` is 0 or 1, not {value}")),
        };
        match name {
            "rows" => self.rows = value,
            "vec4_io" => self.vec4_io = flag(value)?,
            "subgroup" => self.subgroup = value,
            "additive" => self.additive = flag(value)?,
            "local" => self.local = flag(value)?,
            "alibi" => self.alibi = flag(value)?,
            "paged" => self.paged = flag(value)?,
            "coop" => self.coop = value,
            "slots" => self.slots = value,
            "compact" => self.compact = flag(value)?,
            _ => {
                return Err(format!(
                    "unknown switch `{name}` (known: {})",
                    Self::NAMES[..10].join(", ")
                ))
            }
        }
        Ok(self)
    }

    /// (name, value) of every switch, with `direct` (dO read from the caller's tensor: the
    /// backward's `*Direct` kernels) given by the kernel.
    pub fn values(self, direct: bool) -> [(&'static str, u32); 11] {
        let n = Self::NAMES;
        [
            (n[0], self.rows),
            (n[1], self.vec4_io as u32),
            (n[2], self.subgroup),
            (n[3], self.additive as u32),
            (n[4], self.local as u32),
            (n[5], self.alibi as u32),
            (n[6], self.paged as u32),
            (n[7], self.coop),
            (n[8], self.slots),
            (n[9], self.compact as u32),
            (n[10], direct as u32),
        ]
    }
}

/// The constant a numeric switch defines in the prelude (such a switch is read through it).
fn prelude_constant(switch: &str) -> Option<&'static str> {
    match switch {
        "rows" => Some("ROWS"),
        "subgroup" => Some("SUBGROUP"),
        "slots" => Some("SLOTS"),
        "coop" => Some("CM"),
        _ => None,
    }
}

/// Why a composition failed: where (`shaders/FILE:LINE`, or the entry) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeError {
    pub place: String,
    pub why: String,
}

impl std::fmt::Display for ComposeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.place, self.why)
    }
}

/// Composes `entry` for storage type `dtype` with switch values `values`, reading files by their
/// import path through `files`: the crate's own [`fn@file`] (with `root` = `"shaders"`), or a test's
/// set with deliberately broken pieces. `root` is the folder the paths are relative to, named in
/// errors and line markers.
pub fn compose_with<'a>(
    files: &dyn Fn(&str) -> Option<&'a str>,
    root: &str,
    entry: &str,
    dtype: DType,
    values: &[(&'static str, u32)],
) -> Result<String, ComposeError> {
    let text = files(entry).ok_or_else(|| ComposeError {
        place: format!("{root}/{entry}"),
        why: "no such shader".into(),
    })?;
    let declared = declared_switches(&format!("{root}/{entry}"), text)?;
    for &(name, value) in values {
        if value != 0 && !declared.contains(&name) {
            return Err(ComposeError {
                place: format!("{root}/{entry}"),
                why: format!("switch `{name}` = {value} is given but the entry does not declare it (//@switches)"),
            });
        }
    }
    let value_of = |name: &str| values.iter().find(|(n, _)| *n == name).map_or(0, |&(_, v)| v);
    let mut composer = Composer {
        files,
        root,
        values: declared.iter().map(|&d| (d, value_of(d))).collect(),
        used: HashSet::new(),
        imported: HashSet::new(),
        out: String::new(),
        last: None,
    };
    composer.file(entry, None)?;
    let body = std::mem::take(&mut composer.out);
    for &name in &declared {
        let read = composer.used.contains(name) || prelude_constant(name).is_some_and(|c| mentions(&body, c));
        if !read {
            return Err(ComposeError {
                place: format!("{root}/{entry}"),
                why: format!("switch `{name}` is declared but nothing reads it"),
            });
        }
    }
    let mut src = prelude(dtype, &composer.values);
    src.push_str(&body);
    Ok(src)
}

/// Whether `text` uses the identifier `name` (not as part of a longer one).
fn mentions(text: &str, name: &str) -> bool {
    text.match_indices(name).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + name.len()..].chars().next();
        let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        !ident(before) && !ident(after)
    })
}

/// The switches an entry file declares on its `//@switches` line (none without one).
fn declared_switches(entry: &str, text: &str) -> Result<Vec<&'static str>, ComposeError> {
    let mut declared = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let Some(rest) = line.trim().strip_prefix("//@switches") else {
            continue;
        };
        if !declared.is_empty() {
            return Err(ComposeError {
                place: format!("{entry}:{}", i + 1),
                why: "a second //@switches line".into(),
            });
        }
        for name in rest.split_whitespace() {
            let known = Switches::NAMES
                .iter()
                .find(|n| **n == name)
                .ok_or_else(|| ComposeError {
                    place: format!("{entry}:{}", i + 1),
                    why: format!("unknown switch `{name}` (known: {})", Switches::NAMES.join(", ")),
                })?;
            declared.push(*known);
        }
    }
    Ok(declared)
}

/// The generated lines in front of the pieces.
fn prelude(dtype: DType, values: &[(&'static str, u32)]) -> String {
    let value = |name: &str| values.iter().find(|(n, _)| *n == name).map_or(0, |&(_, v)| v);
    let mut src = String::new();
    let coop = value("coop");
    // Directives come before declarations; the matrix operands are f16 whatever the storage.
    if dtype == DType::F16 || coop > 0 {
        src.push_str("enable f16;\n");
    }
    if coop > 0 {
        src.push_str("enable wgpu_cooperative_matrix;\n");
    }
    src.push_str(match dtype {
        DType::F16 => "alias elem = f16;\nconst ELEM_F16: bool = true;\n",
        _ => "alias elem = f32;\nconst ELEM_F16: bool = false;\n",
    });
    if coop > 0 {
        let m = coop;
        src.push_str(&format!(
            "const CM: u32 = {m}u;\nalias coop_a = coop_mat{m}x{m}<f16, A>;\nalias coop_b = coop_mat{m}x{m}<f16, B>;\nalias coop_c = coop_mat{m}x{m}<f32, C>;\n"
        ));
    }
    for (switch, constant) in [("subgroup", "SUBGROUP"), ("rows", "ROWS"), ("slots", "SLOTS")] {
        let v = value(switch);
        if v > 0 {
            src.push_str(&format!("const {constant}: u32 = {v}u;\n"));
        }
    }
    src
}

struct Composer<'f, 'a> {
    files: &'f dyn Fn(&str) -> Option<&'a str>,
    /// The folder import paths are relative to.
    root: &'f str,
    /// The declared switches with their values.
    values: Vec<(&'static str, u32)>,
    /// Switches some directive read.
    used: HashSet<&'static str>,
    imported: HashSet<String>,
    out: String,
    /// The file and line the last emitted line came from.
    last: Option<(String, usize)>,
}

/// An open `//@if` block.
struct Branch {
    /// Whether the lines around the block are kept.
    outer: bool,
    /// Whether the current branch is kept.
    taken: bool,
    seen_else: bool,
    opened: usize,
}

/// An open `//@each_*` block: its lines (number, text) and the switch giving its count.
struct Repeat<'t> {
    switch: &'static str,
    var: &'static str,
    close: &'static str,
    opened: usize,
    lines: Vec<(usize, &'t str)>,
}

impl<'a> Composer<'_, 'a> {
    fn emit(&mut self, path: &str, line: usize, text: &str) {
        let follows = matches!(&self.last, Some((p, l)) if p == path && *l + 1 == line);
        if !follows {
            self.out.push_str(&format!("//#line {}/{path} {line}\n", self.root));
        }
        self.out.push_str(text);
        self.out.push('\n');
        self.last = Some((path.to_string(), line));
    }

    fn switch(&mut self, name: &str, place: &dyn Fn() -> String) -> Result<u32, ComposeError> {
        match self.values.iter().find(|(n, _)| *n == name) {
            Some(&(n, v)) => {
                self.used.insert(n);
                Ok(v)
            }
            None => Err(ComposeError {
                place: place(),
                why: match Switches::NAMES.contains(&name) {
                    true => format!("switch `{name}` is not declared by the entry (//@switches)"),
                    false => format!("unknown switch `{name}` (known: {})", Switches::NAMES.join(", ")),
                },
            }),
        }
    }

    fn file(&mut self, path: &str, from: Option<&str>) -> Result<(), ComposeError> {
        if !self.imported.insert(path.to_string()) {
            return Ok(());
        }
        let text = (self.files)(path).ok_or_else(|| ComposeError {
            place: from.map_or_else(|| format!("{}/{path}", self.root), str::to_string),
            why: format!("unknown import `{path}`"),
        })?;
        let mut branches: Vec<Branch> = Vec::new();
        let mut repeat: Option<Repeat<'a>> = None;
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let root = self.root;
            let place = || format!("{root}/{path}:{n}");
            let keep = branches.last().is_none_or(|b| b.outer && b.taken);
            let directive = line.trim().strip_prefix("//@");
            if let Some(r) = &mut repeat {
                match directive {
                    Some(d) if d == r.close => {
                        let r = repeat.take().expect("open block");
                        let count = self.switch(r.switch, &place)?;
                        if keep {
                            for k in 0..count {
                                for &(ln, l) in &r.lines {
                                    self.emit(path, ln, &l.replace(r.var, &k.to_string()));
                                }
                            }
                        }
                    }
                    Some(d) => {
                        return Err(ComposeError {
                            place: place(),
                            why: format!("//@{d} inside the //@each block opened at line {}", r.opened),
                        })
                    }
                    None => r.lines.push((n, line)),
                }
                continue;
            }
            let Some(d) = directive else {
                if keep {
                    self.emit(path, n, line);
                }
                continue;
            };
            let (word, arg) = d.split_once(char::is_whitespace).unwrap_or((d, ""));
            let arg = arg.trim();
            // Directives are comments: kept in the text (before what they bring), they show the
            // recipe.
            let shown = match word {
                "else" | "endif" => branches.last().is_none_or(|b| b.outer),
                _ => keep,
            };
            if shown && !word.starts_with("each_") {
                self.emit(path, n, line);
            }
            match word {
                "switches" if from.is_none() => {}
                "import" => {
                    if keep {
                        let place = place();
                        self.file(arg, Some(&place))?;
                    }
                }
                "if" => {
                    let (negate, name) = match arg.strip_prefix('!') {
                        Some(name) => (true, name.trim()),
                        None => (false, arg),
                    };
                    let on = self.switch(name, &place)? != 0;
                    branches.push(Branch {
                        outer: keep,
                        taken: on != negate,
                        seen_else: false,
                        opened: n,
                    });
                }
                "else" => match branches.last_mut() {
                    Some(b) if !b.seen_else => {
                        b.taken = !b.taken;
                        b.seen_else = true;
                    }
                    _ => return Err(stray(place(), "//@else")),
                },
                "endif" => {
                    if branches.pop().is_none() {
                        return Err(stray(place(), "//@endif"));
                    }
                }
                "each_row" | "each_lane" => {
                    let row = word == "each_row";
                    repeat = Some(Repeat {
                        switch: if row { "rows" } else { "subgroup" },
                        var: if row { "{r}" } else { "{l}" },
                        close: if row { "end_row" } else { "end_lane" },
                        opened: n,
                        lines: Vec::new(),
                    });
                    continue;
                }
                "end_row" | "end_lane" => return Err(stray(place(), &format!("//@{word}"))),
                _ => {
                    return Err(ComposeError {
                        place: place(),
                        why: format!("unknown directive `//@{word}`"),
                    })
                }
            }
        }
        if let Some(r) = repeat {
            return Err(ComposeError {
                place: format!("{}/{path}:{}", self.root, r.opened),
                why: format!("unclosed //@each block (no //@{})", r.close),
            });
        }
        if let Some(b) = branches.last() {
            return Err(ComposeError {
                place: format!("{}/{path}:{}", self.root, b.opened),
                why: "unclosed //@if (no //@endif)".into(),
            });
        }
        Ok(())
    }
}

fn stray(place: String, what: &str) -> ComposeError {
    ComposeError {
        place,
        why: format!("{what} without its opening directive"),
    }
}

/// Where line `line` (1-based) of a composed source comes from: (`shaders/FILE`, line), by the
/// nearest `//#line` marker above it; `None` for the generated prelude.
pub fn source_location(composed: &str, line: u32) -> Option<(String, u32)> {
    let lines: Vec<&str> = composed.lines().collect();
    let at = (line as usize).checked_sub(1)?;
    if at >= lines.len() {
        return None;
    }
    (0..=at).rev().find_map(|m| {
        let rest = lines[m].strip_prefix("//#line ")?;
        let (path, start) = rest.rsplit_once(' ')?;
        let start: u32 = start.parse().ok()?;
        // The marker names the line after it; the marker itself maps to that line too.
        let offset = (at - m).saturating_sub(1) as u32;
        Some((path.to_string(), start + offset))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compose_test(files: &[(&'static str, &'static str)], values: &[(&'static str, u32)]) -> Result<String, String> {
        let lookup = |p: &str| files.iter().find(|(n, _)| *n == p).map(|(_, t)| *t);
        compose_with(&lookup, "shaders", "entry.wgsl", DType::F32, values).map_err(|e| e.to_string())
    }

    #[test]
    fn follows_imports_branches_and_repeats_and_maps_lines_back() {
        let files = [
            (
                "entry.wgsl",
                "//@switches rows alibi\n//@import a.wgsl\n//@if alibi\nfn on() {}\n//@else\nfn off() {}\n//@endif\n//@each_row\nlet x{r} = {r};\n//@end_row\nfn tail() {}\n",
            ),
            ("a.wgsl", "//@import a.wgsl\nfn a() {}\n"),
        ];
        let src = compose_test(&files, &[("rows", 2), ("alibi", 0)]).unwrap();
        assert!(src.contains("const ROWS: u32 = 2u;"));
        assert!(src.contains("fn off()") && !src.contains("fn on()"));
        assert!(src.contains("let x0 = 0;") && src.contains("let x1 = 1;"));
        assert_eq!(src.matches("fn a()").count(), 1, "imported once");
        let line_of = |needle: &str| src.lines().position(|l| l.contains(needle)).unwrap() as u32 + 1;
        assert_eq!(
            source_location(&src, line_of("fn a()")),
            Some(("shaders/a.wgsl".into(), 2))
        );
        assert_eq!(
            source_location(&src, line_of("fn off()")),
            Some(("shaders/entry.wgsl".into(), 6))
        );
        assert_eq!(
            source_location(&src, line_of("let x1")),
            Some(("shaders/entry.wgsl".into(), 9))
        );
        assert_eq!(
            source_location(&src, line_of("fn tail()")),
            Some(("shaders/entry.wgsl".into(), 11))
        );
        assert_eq!(source_location(&src, 1), None, "prelude");
    }

    #[test]
    fn every_shader_file_is_listed() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
        let mut on_disk = Vec::new();
        for dir in [root.clone(), root.join("common")] {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "wgsl") {
                    on_disk.push(path.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/"));
                }
            }
        }
        on_disk.sort();
        let mut listed: Vec<String> = FILES.iter().map(|(p, _)| p.to_string()).collect();
        listed.sort();
        assert_eq!(listed, on_disk);
    }

    #[test]
    fn fails_loudly() {
        type Case = (&'static str, &'static [(&'static str, u32)], &'static str);
        let cases: [Case; 8] = [
            ("//@import nope.wgsl\n", &[], "entry.wgsl:1: unknown import `nope.wgsl`"),
            (
                "//@switches alibi\n//@if alibi\nfn f() {}\n",
                &[],
                "entry.wgsl:2: unclosed //@if",
            ),
            (
                "//@switches rows\n//@each_row\nlet x = 1;\n",
                &[("rows", 1)],
                "entry.wgsl:2: unclosed //@each",
            ),
            ("//@endif\n", &[], "entry.wgsl:1: //@endif without"),
            ("//@iff alibi\n", &[], "unknown directive `//@iff`"),
            ("//@if bogus\n//@endif\n", &[], "unknown switch `bogus`"),
            (
                "fn f() {}\n",
                &[("paged", 1)],
                "switch `paged` = 1 is given but the entry does not declare it",
            ),
            (
                "//@switches alibi\nfn f() {}\n",
                &[("alibi", 1)],
                "switch `alibi` is declared but nothing reads it",
            ),
        ];
        for (entry, values, expected) in cases {
            let files = [("entry.wgsl", entry)];
            match compose_test(&files, values) {
                Err(e) => assert!(e.contains(expected), "{entry:?}: {e}"),
                Ok(src) => panic!("{entry:?} composed:\n{src}"),
            }
        }
    }
}
