//! The documentation's promises that need no GPU: every relative link in the repository's
//! Markdown files resolves to a file or directory of the repository, every table of
//! BENCHMARKS.md matches its record, and every measured default agrees with the record it names.

use std::path::{Path, PathBuf};

fn markdown_files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in [root.to_path_buf(), root.join("docs")] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "md") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

/// Targets of inline Markdown links `[text](target)` outside code spans and blocks.
fn link_targets(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_block = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block {
            continue;
        }
        // Drop inline code spans.
        let plain: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = plain.as_str();
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            if let Some(end) = rest.find(')') {
                out.push(rest[..end].to_string());
                rest = &rest[end..];
            }
        }
    }
    out
}

#[test]
fn relative_markdown_links_resolve() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = markdown_files(root);
    assert!(files.iter().any(|f| f.ends_with("README.md")), "README.md not found");
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for target in link_targets(&text) {
            let target = target.split_whitespace().next().unwrap_or("");
            if target.is_empty() || target.starts_with('#') || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let path = target.split('#').next().unwrap();
            checked += 1;
            if !file.parent().unwrap().join(path).exists() {
                broken.push(format!("{}: {target}", file.strip_prefix(root).unwrap().display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    eprintln!("{checked} relative links in {} Markdown files resolve", files.len());
}

#[test]
fn link_parser_finds_links_outside_code() {
    let text = "see [a](docs/A.md) and `[b](no.md)`\n```\n[c](no.md)\n```\n[d](B.md#x)";
    assert_eq!(link_targets(text), vec!["docs/A.md", "B.md#x"]);
}

/// BENCHMARKS.md is generated from the records under benchmarks/: every table between
/// `<!-- table … -->` markers equals what scripts/benchmarks-md.py renders from its record, every
/// record it cites has a meta.json naming its commit, build and driver, and no table is written
/// by hand outside the markers.
#[test]
fn benchmarks_tables_match_their_records() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("python3")
        .arg(root.join("scripts/benchmarks-md.py"))
        .arg("--check")
        .current_dir(root)
        .output()
        .expect("python3 runs scripts/benchmarks-md.py");
    assert!(
        out.status.success(),
        "BENCHMARKS.md differs from its records:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(root.join("BENCHMARKS.md")).unwrap();
    let mut records = Vec::new();
    let mut in_table = false;
    for (n, line) in text.lines().enumerate() {
        if let Some(spec) = line.strip_prefix("<!-- table ") {
            in_table = true;
            records.extend(
                spec.split_whitespace()
                    .filter(|w| w.starts_with("benchmarks/"))
                    .map(String::from),
            );
        } else if line == "<!-- /table -->" {
            in_table = false;
        } else if !in_table && line.starts_with('|') {
            panic!("BENCHMARKS.md:{}: a table outside the generated blocks: {line}", n + 1);
        }
    }
    assert!(!records.is_empty(), "BENCHMARKS.md cites no record");
    for record in &records {
        let meta = root.join(record).parent().unwrap().join("meta.json");
        let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();
        for field in ["commit", "build", "adapter", "cpu", "date", "load_before", "load_after"] {
            assert!(meta.get(field).is_some(), "{record}: meta.json lacks {field}");
        }
        assert_eq!(meta["commit"].as_str().map(str::len), Some(40), "{record}: commit");
    }
}

/// Every measured default names a record of the repository, and that record's decode rows show
/// what the entry claims: at B = 1 on a contiguous cache, at every key length recorded, the
/// fastest row of the design the entry picks beats the fastest row of the other design.
#[test]
fn measured_decode_defaults_match_their_records() {
    use wgpu_attention::kernels::flash_decode::CPU_DECODE_DESIGNS;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(!CPU_DECODE_DESIGNS.is_empty());
    for entry in CPU_DECODE_DESIGNS {
        let path = root.join(entry.record);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let rows = json["rows"].as_array().expect("a decode record has rows");
        let mut lengths: Vec<u64> = Vec::new();
        for r in rows {
            let lk = r["shape"]["lk"].as_u64().unwrap();
            if r["shape"]["b"] == 1 && r["layout"] == "contiguous" && !lengths.contains(&lk) {
                lengths.push(lk);
            }
        }
        assert!(!lengths.is_empty(), "{}: no B = 1 contiguous rows", entry.record);
        for lk in lengths {
            let fastest = |design: &str| {
                rows.iter()
                    .filter(|r| {
                        r["shape"]["b"] == 1
                            && r["shape"]["lk"] == lk
                            && r["layout"] == "contiguous"
                            && r["design"] == design
                            && r["within_tolerance"] != false
                    })
                    .filter_map(|r| r["median_ms"].as_f64())
                    .fold(f64::INFINITY, f64::min)
            };
            let (lanes, rows_ms) = (fastest("lanes"), fastest("rows"));
            assert!(
                lanes.is_finite() && rows_ms.is_finite(),
                "{}: Lk {lk} lacks a design",
                entry.record
            );
            assert_eq!(
                lanes < rows_ms,
                entry.lanes,
                "{} at Lk {lk}: lanes {lanes} ms, rows {rows_ms} ms, but the entry picks {}",
                entry.record,
                if entry.lanes { "lanes" } else { "rows" }
            );
        }
    }
}

/// Each built-in register tile on CPU drivers is the fastest row count its record measured for
/// that head dim, in every causal setting.
#[test]
fn measured_register_rows_match_their_records() {
    use wgpu_attention::kernels::flash_forward::CPU_REGISTER_ROWS;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(!CPU_REGISTER_ROWS.is_empty());
    let mut lower = 0;
    for entry in CPU_REGISTER_ROWS {
        let path = root.join(entry.record);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let rows = json["rows"].as_array().expect("a bench record has rows");
        // The record's rows for head dims in (lower, max_head], grouped by shape and causal.
        let covered: Vec<&serde_json::Value> = rows
            .iter()
            .filter(|r| {
                let head = r["shape"]["dk"].as_u64().unwrap() + r["shape"]["dv"].as_u64().unwrap();
                head > lower && head <= entry.max_head as u64 && r["within_tolerance"] == true
            })
            .collect();
        assert!(
            !covered.is_empty(),
            "{}: no row for head dims up to {}",
            entry.record,
            entry.max_head
        );
        let mut groups: Vec<(&serde_json::Value, &serde_json::Value)> =
            covered.iter().map(|r| (&r["shape"], &r["causal"])).collect();
        groups.dedup();
        for (shape, causal) in groups {
            let fastest = covered
                .iter()
                .filter(|r| r["shape"] == *shape && r["causal"] == *causal)
                .min_by(|a, b| {
                    a["median_ms"]
                        .as_f64()
                        .unwrap()
                        .total_cmp(&b["median_ms"].as_f64().unwrap())
                })
                .unwrap();
            assert_eq!(
                fastest["tile"].as_str().unwrap(),
                format!("wg16 rows{}", entry.rows),
                "{} ({shape}, causal {causal}): the entry picks {} rows",
                entry.record,
                entry.rows
            );
        }
        lower = entry.max_head as u64;
    }
}

/// README's map of the kernels ("Where each kernel lives") names files that exist, covers every
/// entry shader, and states the permutation count the table really has.
#[test]
fn readme_kernel_map_matches_the_tree() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let start = readme
        .find("### Where each kernel lives")
        .expect("README has the kernel map");
    let table: Vec<&str> = readme[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .collect();
    assert!(table.len() > 15, "{} rows", table.len());
    let mut named = Vec::new();
    for row in &table {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        for part in cells[2..cells.len() - 1].iter().flat_map(|c| c.split(", ")) {
            let Some(path) = part.strip_prefix('`').and_then(|c| c.strip_suffix('`')) else {
                continue;
            };
            assert!(
                root.join(path).is_file(),
                "README's kernel map names {path}, which does not exist"
            );
            named.push(path.to_string());
        }
    }
    for kernel in wgpu_attention::pipeline::Kernel::ALL {
        let entry = format!("shaders/{}", kernel.file());
        assert!(named.contains(&entry), "README's kernel map lacks {entry}");
    }
    let count = wgpu_attention::pipeline::permutations().len();
    let stated = format!(
        "{} permutations",
        count
            .to_string()
            .as_bytes()
            .rchunks(3)
            .rev()
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(",")
    );
    assert!(readme.contains(&stated), "README should state \"{stated}\"");
}
