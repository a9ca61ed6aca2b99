//! Programs declared in files (`[daemon] programs_dir`, default
//! `/etc/bpfman/programs.d/*.toml`): loaded and attached when the daemon starts (after a
//! reboot `/run` is empty), and brought in line whenever a file changes. Each declared
//! program is owned by root and tagged with metadata `bpfman.io/static` = `FILE/NAME`
//! and `bpfman.io/static-digest` = a hash of its declaration, so a changed declaration
//! is replaced and a removed one unloaded. Programs loaded through the API are never
//! touched. See docs/reliability.md for the format.
//!
//! Only root-owned programs count as declared ones (the `bpfman.io/` metadata prefix is
//! root's, so no tenant can forge the tags either). Two loaded programs with one key
//! are an error that is reported and left for root to settle; a directory that cannot
//! be read changes nothing; and a declaration is loaded again only when nothing under
//! its key remains loaded, so a failed unload never leaves two copies.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::manager::{ListFilter, Manager};
use crate::model::{
    AttachSpec, Bytecode, Caller, Direction, LoadRequest, NetHook, ProceedOn, ProgramKind,
    ProgramSpec,
};

pub const META_KEY: &str = bpfman_types::metadata::STATIC;
pub const META_DIGEST: &str = bpfman_types::metadata::STATIC_DIGEST;

/// One file: `[[program]]` entries.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StaticFile {
    #[serde(default, rename = "program")]
    pub programs: Vec<StaticProgram>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StaticProgram {
    /// Unique within its file.
    pub name: String,
    /// An ELF object on this machine ...
    pub file: Option<String>,
    /// ... or an image reference.
    pub image: Option<String>,
    /// Always, IfNotPresent (default) or Never.
    pub pull_policy: Option<String>,
    /// The function to load and its program type.
    pub function: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// fentry/fexit: the kernel function.
    pub attach_fn: Option<String>,
    /// Globals: NAME = "HEX".
    #[serde(default)]
    pub global: BTreeMap<String, String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub attach: Vec<StaticAttach>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StaticAttach {
    #[serde(rename = "type")]
    pub kind: String,
    pub iface: Option<String>,
    pub priority: Option<i32>,
    pub direction: Option<String>,
    #[serde(default)]
    pub proceed_on: Vec<String>,
    pub netns: Option<String>,
    pub tracepoint: Option<String>,
    pub fn_name: Option<String>,
    #[serde(default)]
    pub offset: u64,
    pub target: Option<String>,
    pub pid: Option<i32>,
}

/// Parses one file; errors name the file and line.
pub fn parse(text: &str, origin: &str) -> Result<StaticFile> {
    let f: StaticFile = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
            .map(|l| format!(" at line {l}"))
            .unwrap_or_default();
        Error::invalid(format!("{origin}{line}: {}", e.message()))
    })?;
    let mut seen = std::collections::BTreeSet::new();
    for p in &f.programs {
        if p.name.is_empty() || !seen.insert(p.name.clone()) {
            return Err(Error::invalid(format!(
                "{origin}: program names must be present and unique ('{}')",
                p.name
            )));
        }
        if p.file.is_some() == p.image.is_some() {
            return Err(Error::invalid(format!(
                "{origin}: program '{}' needs exactly one of file or image",
                p.name
            )));
        }
        p.kind.parse::<ProgramKind>()?;
        for a in &p.attach {
            attach_spec(a).map_err(|e| e.context(format!("{origin}: program '{}'", p.name)))?;
        }
        load_request(p, "", "")
            .map_err(|e| e.context(format!("{origin}: program '{}'", p.name)))?;
    }
    Ok(f)
}

fn hex(s: &str) -> Result<Vec<u8>> {
    let s = s.trim_start_matches("0x");
    if s.is_empty() || !s.len().is_multiple_of(2) {
        return Err(Error::invalid(format!(
            "global value '{s}' needs an even number of hex digits"
        )));
    }
    ::hex::decode(s).map_err(|_| Error::invalid(format!("global value '{s}' is not hex")))
}

fn load_request(p: &StaticProgram, key: &str, digest: &str) -> Result<LoadRequest> {
    let kind: ProgramKind = p.kind.parse()?;
    let bytecode = match (&p.file, &p.image) {
        (Some(f), None) => Bytecode::File(f.clone()),
        (None, Some(i)) => Bytecode::Image {
            url: i.clone(),
            pull_policy: crate::image::PullPolicy::parse(
                p.pull_policy.as_deref().unwrap_or("IfNotPresent"),
            )?
            .as_i32(),
            digest: None,
        },
        _ => return Err(Error::invalid("needs exactly one of file or image")),
    };
    let mut metadata = p.metadata.clone();
    metadata.insert(META_KEY.into(), key.into());
    metadata.insert(META_DIGEST.into(), digest.into());
    Ok(LoadRequest {
        bytecode: Some(bytecode),
        programs: vec![ProgramSpec {
            name: p.function.clone(),
            kind,
            attach_fn: p.attach_fn.clone(),
        }],
        global_data: p
            .global
            .iter()
            .map(|(k, v)| Ok((k.clone(), hex(v)?)))
            .collect::<Result<_>>()?,
        metadata,
        map_owner_id: None,
        registry_auth: None,
    })
}

fn attach_spec(a: &StaticAttach) -> Result<AttachSpec> {
    let need = |v: &Option<String>, what: &str| {
        v.clone()
            .ok_or_else(|| Error::invalid(format!("a {} attach needs {what}", a.kind)))
    };
    let codes = |vocabulary: Option<ProceedOn>| -> Result<Vec<i32>> {
        a.proceed_on
            .iter()
            .map(|n| {
                vocabulary
                    .and_then(|v| v.code(n))
                    .ok_or_else(|| Error::invalid(format!("unknown proceed_on '{n}'")))
            })
            .collect()
    };
    let net = |vocabulary: Option<ProceedOn>| -> Result<NetHook> {
        Ok(NetHook {
            iface: need(&a.iface, "iface")?,
            priority: a.priority.unwrap_or(1000),
            proceed_on: codes(vocabulary)?,
            netns: a.netns.clone(),
            direction: a
                .direction
                .as_deref()
                .map(str::parse::<Direction>)
                .transpose()?,
        })
    };
    Ok(match a.kind.as_str() {
        "xdp" => AttachSpec::Xdp(net(Some(ProceedOn::Xdp))?),
        "tc" => AttachSpec::Tc(net(Some(ProceedOn::Tc))?),
        "tcx" => AttachSpec::Tcx(net(None)?),
        "tracepoint" => AttachSpec::Tracepoint {
            tracepoint: need(&a.tracepoint, "tracepoint")?,
        },
        "kprobe" | "kretprobe" => AttachSpec::Kprobe {
            fn_name: need(&a.fn_name, "fn_name")?,
            offset: a.offset,
            container_pid: None,
        },
        "uprobe" | "uretprobe" => AttachSpec::Uprobe {
            fn_name: a.fn_name.clone(),
            offset: a.offset,
            target: need(&a.target, "target")?,
            pid: a.pid,
            container_pid: None,
        },
        "fentry" => AttachSpec::Fentry,
        "fexit" => AttachSpec::Fexit,
        "lsm" => AttachSpec::Lsm,
        other => {
            return Err(Error::invalid(format!(
                "unknown attach type '{other}': use xdp, tc, tcx, tracepoint, kprobe, uprobe, \
                 fentry, fexit or lsm"
            )));
        }
    })
}

fn digest(p: &StaticProgram) -> String {
    let json = serde_json::to_vec(p).unwrap_or_default();
    hex::encode(&Sha256::digest(&json)[..12])
}

/// What one step of [`apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Loaded,
    Attached,
    Unloaded,
    /// Left as it is (and why).
    Kept,
    Failed,
}

/// One entry of what [`apply`] did: typed for logs and metrics, with the sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub text: String,
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// The events of one [`apply`].
#[derive(Debug, Default)]
pub struct Report(pub Vec<Event>);

impl Report {
    fn push(&mut self, kind: EventKind, text: String) {
        self.0.push(Event { kind, text });
    }
    fn loaded(&mut self, t: String) {
        self.push(EventKind::Loaded, t)
    }
    fn attached(&mut self, t: String) {
        self.push(EventKind::Attached, t)
    }
    fn unloaded(&mut self, t: String) {
        self.push(EventKind::Unloaded, t)
    }
    fn kept(&mut self, t: String) {
        self.push(EventKind::Kept, t)
    }
    fn failed(&mut self, t: String) {
        self.push(EventKind::Failed, t)
    }
}

impl IntoIterator for Report {
    type Item = Event;
    type IntoIter = std::vec::IntoIter<Event>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

// Long on purpose: the whole comparison of declared and loaded programs in one pass
// (read declarations, find duplicates, unload the changed or removed, load and attach
// the new), each step using what the one before found.
/// Brings the loaded static programs in line with the files in `dir`. Returns what it
/// did and what failed (a bad file changes nothing of what it declared before).
pub fn apply(m: &Manager, dir: &Path) -> Report {
    let report = apply_inner(m, dir);
    for e in &report.0 {
        let result = match e.kind {
            EventKind::Loaded => "loaded",
            EventKind::Attached => "attached",
            EventKind::Unloaded => "removed",
            EventKind::Kept => continue,
            EventKind::Failed => "failed",
        };
        crate::metrics::Events::count(&m.events().programs_d_applies, result);
    }
    report
}

fn apply_inner(m: &Manager, dir: &Path) -> Report {
    let mut report = Report::default();
    let root = Caller {
        uid: 0,
        gid: 0,
        pid: std::process::id() as i32,
    };
    // Declared: key -> (declaration, digest). Files that fail to parse keep theirs.
    let mut declared: BTreeMap<String, (StaticProgram, String)> = BTreeMap::new();
    let mut broken_files = Vec::new();
    // A directory that is not there declares nothing; one that cannot be read (no fd
    // left, no permission) says nothing, and everything stays as it is.
    let mut files: Vec<std::path::PathBuf> = match std::fs::read_dir(dir) {
        Ok(r) => {
            let mut v = Vec::new();
            for e in r {
                match e {
                    Ok(e) => v.push(e.path()),
                    Err(e) => {
                        report.failed(format!(
                            "reading {}: {e}; every static program is left as it is",
                            dir.display()
                        ));
                        return report;
                    }
                }
            }
            v
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            report.failed(format!(
                "reading {}: {e}; every static program is left as it is",
                dir.display()
            ));
            return report;
        }
    };
    files.retain(|p: &std::path::PathBuf| p.extension().is_some_and(|e| e == "toml"));
    files.sort();
    for path in &files {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parsed = std::fs::read_to_string(path)
            .map_err(|e| Error::invalid(format!("reading {}: {e}", path.display())))
            .and_then(|t| parse(&t, &path.display().to_string()));
        match parsed {
            Ok(f) => {
                for p in f.programs {
                    let d = digest(&p);
                    declared.insert(format!("{stem}/{}", p.name), (p, d));
                }
            }
            Err(e) => {
                report.failed(format!("{e}; its programs are left as they are"));
                broken_files.push(format!("{stem}/"));
            }
        }
    }
    let current = match m.list(root, &ListFilter::default()) {
        Ok(v) => v,
        Err(e) => {
            report.failed(format!("listing programs: {e}"));
            return report;
        }
    };
    let mut loaded: BTreeMap<String, (u32, String, Vec<u32>)> = BTreeMap::new();
    let mut duplicated: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for v in current {
        if let Some(p) = v.program
            && p.owner.uid == 0
            && let Some(key) = p.metadata.get(META_KEY)
        {
            let d = p.metadata.get(META_DIGEST).cloned().unwrap_or_default();
            if let Some((other, _, _)) = loaded.get(key) {
                duplicated
                    .entry(key.clone())
                    .or_insert_with(|| vec![*other])
                    .push(p.id);
                continue;
            }
            loaded.insert(key.clone(), (p.id, d, v.links));
        }
    }
    for (key, ids) in &duplicated {
        let list: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        report.kept(format!(
            "static program {key}: loaded {} times (programs {}); nothing is done for it \
             until root unloads the extra ones",
            ids.len(),
            list.join(", ")
        ));
        loaded.remove(key);
    }
    // Keys whose old program could not be unloaded: their new version waits.
    let mut stuck = std::collections::BTreeSet::new();
    // Gone or changed: unload.
    for (key, (id, d, _)) in &loaded {
        if broken_files.iter().any(|b| key.starts_with(b)) {
            continue;
        }
        let keep = declared.get(key).is_some_and(|(_, nd)| nd == d);
        if !keep {
            match m.unload(root, *id) {
                Ok(()) => report.unloaded(format!(
                    "static program {key} (id {id}): {}; unloaded",
                    if declared.contains_key(key) {
                        "its declaration changed"
                    } else {
                        "no longer declared"
                    }
                )),
                Err(e) => {
                    stuck.insert(key.clone());
                    report.failed(format!(
                        "static program {key}: unloading {id}: {e}; its new declaration is \
                         not loaded until the old program is gone"
                    ))
                }
            }
        }
    }
    // New or changed: load and attach; present but missing links: attach again.
    for (key, (p, d)) in &declared {
        if duplicated.contains_key(key) || stuck.contains(key) {
            continue;
        }
        let existing = loaded.get(key).filter(|(_, ld, _)| ld == d);
        let id = match existing {
            Some((id, _, links)) => {
                if links.len() >= p.attach.len() {
                    continue;
                }
                // Some attachment is missing (an interface that appeared late, say):
                // start the attachments over.
                for l in links {
                    let _ = m.detach(root, *l);
                }
                *id
            }
            None => {
                let req = match load_request(p, key, d) {
                    Ok(r) => r,
                    Err(e) => {
                        report.failed(format!("static program {key}: {e}"));
                        continue;
                    }
                };
                match m.load(root, req) {
                    Ok(progs) => match progs.first() {
                        Some(prog) => {
                            report.loaded(format!("static program {key}: loaded as {}", prog.id));
                            prog.id
                        }
                        None => continue,
                    },
                    Err(e) => {
                        report.failed(format!("static program {key}: loading failed: {e}"));
                        continue;
                    }
                }
            }
        };
        for a in &p.attach {
            let spec = match attach_spec(a) {
                Ok(s) => s,
                Err(e) => {
                    report.failed(format!("static program {key}: {e}"));
                    continue;
                }
            };
            let target = spec.target();
            match m.attach(root, id, spec) {
                Ok(l) => report.attached(format!(
                    "static program {key}: attached to {target} (link {})",
                    l.id
                )),
                Err(e) => report.failed(format!(
                    "static program {key}: attaching to {target} failed (tried again later): {e}"
                )),
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_names_mistakes() {
        let good = r#"
[[program]]
name = "fw"
file = "/opt/x.o"
function = "xdp_drop_proto"
type = "xdp"
global = { drop_proto = "01" }
[[program.attach]]
type = "xdp"
iface = "eth0"
priority = 50
proceed_on = ["pass", "drop"]
"#;
        let f = parse(good, "t.toml");
        assert!(f.is_ok(), "{f:?}");
        let e = parse(&good.replace("iface = \"eth0\"\n", ""), "t.toml")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("needs iface"), "{e}");
        let e = parse(&good.replace("priority", "prio"), "t.toml")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("line") && e.contains("prio"), "{e}");
        let e = parse(&good.replace("\"01\"", "\"0g\""), "t.toml")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("not hex"), "{e}");
    }
}
