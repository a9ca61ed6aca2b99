//! The CRDs generated from the Rust types against upstream's schema facts (the golden in
//! `tests/golden/upstream-schema.txt`, written from bpfman-operator's CRDs), path by path, and
//! against the files shipped in `deploy/kubernetes/crds/`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use bpfman_k8s::crd;

/// Where this project deliberately differs from upstream's schema: (upstream's line, ours, why).
/// Anything else that differs is a defect.
const DELIBERATE: &[(&str, &str, &str)] = &[(
    "column NodeSelector type=string jsonPath=.spec.nodeselector",
    "column NodeSelector type=string jsonPath=.spec.nodeSelector",
    "upstream's printer column points at a path that does not exist (always empty)",
)];

fn golden() -> BTreeMap<String, Vec<String>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/upstream-schema.txt");
    let text = std::fs::read_to_string(&path).expect("read the golden");
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix("crd ") {
            current = Some(name.to_string());
        }
        let Some(c) = current.clone() else {
            panic!("golden line before any `crd` header: {line}");
        };
        out.entry(c).or_default().push(line.to_string());
    }
    out
}

#[test]
fn generated_schema_equals_upstream_at_every_path() {
    let golden = golden();
    let ours: BTreeMap<String, Vec<String>> = crd::crds()
        .into_iter()
        .map(|(_, c)| {
            (
                c.metadata.name.clone().unwrap_or_default(),
                crd::listing(&c),
            )
        })
        .collect();
    assert_eq!(
        golden.keys().collect::<Vec<_>>(),
        ours.keys().collect::<Vec<_>>(),
        "the same five CRDs"
    );
    let mut differences = Vec::new();
    let mut fixed = Vec::new();
    for (name, want) in &golden {
        let want: BTreeSet<&String> = want.iter().collect();
        let have: BTreeSet<&String> = ours[name].iter().collect();
        for missing in want.difference(&have) {
            match DELIBERATE.iter().find(|(up, _, _)| up == missing) {
                Some((_, ours_line, why)) if have.iter().any(|h| h == ours_line) => {
                    fixed.push(format!("{name}: {missing} -> {ours_line} ({why})"))
                }
                _ => differences.push(format!("{name}: upstream has, we lack: {missing}")),
            }
        }
        for extra in have.difference(&want) {
            if DELIBERATE.iter().any(|(_, o, _)| o == extra) {
                continue;
            }
            // Extensions may only add optional fields.
            let optional_field = extra.starts_with('.') && !extra.contains(" REQUIRED");
            let parent_exists = extra
                .split(':')
                .next()
                .and_then(|p| p.rsplit_once('.'))
                .map(|(parent, _)| want.iter().any(|w| w.starts_with(&format!("{parent}:"))))
                .unwrap_or(false);
            if optional_field && parent_exists {
                println!("extension (optional, allowed): {name}: {extra}");
            } else {
                differences.push(format!("{name}: we have, upstream lacks: {extra}"));
            }
        }
    }
    for f in &fixed {
        println!("deliberate fix: {f}");
    }
    assert!(
        differences.is_empty(),
        "{} difference(s) from upstream's schema:\n{}",
        differences.len(),
        differences.join("\n")
    );
    assert_eq!(
        fixed.len(),
        2,
        "the printer-column fix applies to both application kinds"
    );
}

#[test]
fn shipped_crds_are_what_the_types_generate() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes/crds");
    let mut stale = Vec::new();
    for (file, c) in crd::crds() {
        let want = crd::to_yaml(&c).expect("render");
        match std::fs::read_to_string(dir.join(file)) {
            Ok(have) if have == want => {}
            Ok(_) => stale.push(format!("{file} differs")),
            Err(e) => stale.push(format!("{file}: {e}")),
        }
    }
    let shipped: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes/crds")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    let generated: BTreeSet<String> = crd::crds()
        .into_iter()
        .map(|(f, _)| f.to_string())
        .collect();
    for extra in shipped.difference(&generated) {
        stale.push(format!("{extra} is shipped but not generated"));
    }
    assert!(
        stale.is_empty(),
        "deploy/kubernetes/crds is stale ({}); regenerate with `cargo run --bin crdgen -- --out-dir deploy/kubernetes/crds`",
        stale.join("; ")
    );
}

#[test]
fn the_golden_would_catch_a_change() {
    // The comparison must be able to fail: a tightened bound or a dropped default shows up.
    let (_, c) = crd::crds()
        .into_iter()
        .find(|(f, _)| f.contains("clusterbpfapplications."))
        .expect("crd");
    let lines = crd::listing(&c);
    let priority = lines
        .iter()
        .find(|l| l.starts_with(".spec.programs[].xdp.links[].priority:"))
        .expect("priority line");
    assert!(
        priority.contains("maximum=1000") && priority.contains("minimum=0"),
        "{priority}"
    );
    let golden = golden();
    assert!(golden["clusterbpfapplications.bpfman.io"].contains(priority));
    assert!(!golden["clusterbpfapplications.bpfman.io"].contains(&priority.replace("1000", "999")));
}
