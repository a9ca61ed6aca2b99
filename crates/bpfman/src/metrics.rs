//! The daemon's metrics: event counters the manager bumps as things happen (load failures,
//! policy denials, reconciliation, dispatcher rebuilds, image pulls, programs.d), and a
//! collector that reads every managed program and link from the store and the kernel at
//! scrape time (no polling task). Names follow Prometheus practice: a `bpfman_` prefix,
//! base units, `_total` on counters, no unit in a label. docs/metrics.md lists them all.
//!
//! Cardinality is bounded: per-object series exist only for objects bpfman manages now (an
//! unloaded program's series are gone from the next scrape), and the only labels from caller
//! input are the metadata keys the config names (`[metrics] metadata_labels`).

use std::sync::{Arc, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::{Error, ErrorKind};
use crate::manager::Manager;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenialLabels {
    pub action: String,
    pub rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RepairLabels {
    pub kind: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RebuildLabels {
    pub hook_type: String,
    pub result: String,
}

/// Event counters, bumped where things happen; cheap atomics, counted whether or not an
/// endpoint serves them.
#[derive(Debug)]
pub struct Events {
    pub load_failures: Family<ReasonLabels, Counter>,
    pub policy_denials: Family<DenialLabels, Counter>,
    pub reconcile_runs: Family<ResultLabels, Counter>,
    pub reconcile_repairs: Family<RepairLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub dispatcher_rebuilds: Family<RebuildLabels, Counter>,
    pub image_pulls: Family<ResultLabels, Counter>,
    pub signature_checks: Family<ResultLabels, Counter>,
    pub programs_d_applies: Family<ResultLabels, Counter>,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            load_failures: Family::default(),
            policy_denials: Family::default(),
            reconcile_runs: Family::default(),
            reconcile_repairs: Family::default(),
            // 1 ms .. ~16 s
            reconcile_duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            dispatcher_rebuilds: Family::default(),
            image_pulls: Family::default(),
            signature_checks: Family::default(),
            programs_d_applies: Family::default(),
        }
    }
}

fn label<S: Into<String>>(s: S) -> String {
    s.into()
}

impl Events {
    /// Registers every event family under `registry` (which carries the `bpfman` prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "program_load_failures",
            "Loads refused or failed, by reason (verifier, permission, missing_feature, bad_object, limit, other)",
            self.load_failures.clone(),
        );
        registry.register(
            "policy_denials",
            "Requests the policy denied, by action and the deciding rule ('none': no rule names the caller; 'no_grant': rules name it, none grants the action)",
            self.policy_denials.clone(),
        );
        registry.register(
            "reconcile_runs",
            "Reconciliation runs (start-up, background, on request), by result",
            self.reconcile_runs.clone(),
        );
        registry.register(
            "reconcile_repairs",
            "Differences reconciliation found, by kind of object and outcome (repaired, failed)",
            self.reconcile_repairs.clone(),
        );
        registry.register_with_unit(
            "reconcile_duration",
            "How long reconciliation runs take",
            prometheus_client::registry::Unit::Seconds,
            self.reconcile_duration.clone(),
        );
        registry.register(
            "dispatcher_rebuilds",
            "Dispatcher rebuilds (a program added to or removed from a shared hook, or a repair), by hook type and result",
            self.dispatcher_rebuilds.clone(),
        );
        registry.register(
            "image_pulls",
            "Bytecode image pulls, by result (pulled, cached, failed)",
            self.image_pulls.clone(),
        );
        registry.register(
            "image_signature_checks",
            "Image signature checks, by result (verified, unsigned_allowed, failed)",
            self.signature_checks.clone(),
        );
        registry.register(
            "programs_d_applies",
            "Declarations from programs.d applied, by result (loaded, attached, failed, removed)",
            self.programs_d_applies.clone(),
        );
    }

    /// Counts a failed load, classified by what went wrong.
    pub fn load_failed(&self, e: &Error) {
        let reason = match e.kind() {
            ErrorKind::PermissionDenied => "permission",
            ErrorKind::Unsupported => "missing_feature",
            ErrorKind::InvalidArgument | ErrorKind::NotFound => "bad_object",
            ErrorKind::ResourceExhausted | ErrorKind::FailedPrecondition => "limit",
            ErrorKind::Kernel
                if e.message().contains("verifier") || e.errno() == Some(libc::EACCES) =>
            {
                "verifier"
            }
            ErrorKind::Kernel => "kernel",
            _ => "other",
        };
        self.load_failures
            .get_or_create(&ReasonLabels {
                reason: label(reason),
            })
            .inc();
    }

    pub fn denied(&self, action: &str, rule: Option<&str>) {
        self.policy_denials
            .get_or_create(&DenialLabels {
                action: label(action),
                rule: label(rule.unwrap_or("none")),
            })
            .inc();
    }

    pub fn count(family: &Family<ResultLabels, Counter>, result: &str) {
        family
            .get_or_create(&ResultLabels {
                result: label(result),
            })
            .inc();
    }
}

/// Which metadata keys become labels of `bpfman_program_info`, and under which label names.
#[derive(Debug, Clone, Default)]
pub struct MetadataLabels(Vec<(String, String)>);

/// Labels the info metric has of its own; a metadata label may not take one.
const OWN_LABELS: [&str; 6] = ["id", "name", "type", "owner", "application", "le"];

impl MetadataLabels {
    /// Maps each key to a Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`: other characters
    /// become `_`); refuses an empty key, a name that clashes with the info metric's own
    /// labels or another key's, or one Prometheus reserves (`__` prefix).
    pub fn new(keys: &[String]) -> std::result::Result<Self, String> {
        let mut out: Vec<(String, String)> = Vec::new();
        for k in keys {
            if k.is_empty() {
                return Err("[metrics] metadata_labels: an empty key names nothing".into());
            }
            let mut name: String = k
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            if name.as_bytes()[0].is_ascii_digit() {
                name.insert(0, '_');
            }
            if name.starts_with("__") {
                return Err(format!(
                    "[metrics] metadata_labels: key '{k}' becomes label '{name}'; names starting with '__' are Prometheus's own"
                ));
            }
            if OWN_LABELS.contains(&name.as_str()) {
                return Err(format!(
                    "[metrics] metadata_labels: key '{k}' becomes label '{name}', which bpfman_program_info already has"
                ));
            }
            if let Some((other, _)) = out.iter().find(|(_, n)| *n == name) {
                return Err(format!(
                    "[metrics] metadata_labels: keys '{other}' and '{k}' both become label '{name}'"
                ));
            }
            out.push((k.clone(), name));
        }
        Ok(Self(out))
    }
}

/// The metadata keys whose value names a program's application, first found wins: the CLI's
/// `--application` (`bpfman_application`), then the Kubernetes agent's (the BpfApplication's
/// name).
pub const APPLICATION_KEYS: [&str; 2] = ["bpfman_application", "bpfman.io/ProgramName"];

/// Reads every managed program and link at scrape time.
#[derive(Debug)]
pub struct ObjectCollector {
    manager: Weak<Manager>,
    labels: MetadataLabels,
}

impl ObjectCollector {
    pub fn new(manager: &Arc<Manager>, labels: MetadataLabels) -> Self {
        Self {
            manager: Arc::downgrade(manager),
            labels,
        }
    }
}

/// A sample value: counters of whole things go out as integers, seconds as floats.
#[derive(Clone, Copy)]
enum V {
    U(u64),
    F(f64),
}

type Rows = Vec<(Vec<(String, String)>, V)>;

fn family(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    ty: MetricType,
    rows: &Rows,
) -> std::fmt::Result {
    if rows.is_empty() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(name, help, None, ty)?;
    for (labels, v) in rows {
        let mut e = m.encode_family(labels)?;
        match (ty, v) {
            (MetricType::Counter, V::U(u)) => e.encode_counter::<NoLabelSet, _, u64>(u, None)?,
            (MetricType::Counter, V::F(f)) => e.encode_counter::<NoLabelSet, _, u64>(f, None)?,
            (_, V::U(u)) => e.encode_gauge(&(*u as i64))?,
            (_, V::F(f)) => e.encode_gauge(f)?,
        }
    }
    Ok(())
}

fn kv(k: &str, v: impl ToString) -> (String, String) {
    (k.to_string(), v.to_string())
}

impl Collector for ObjectCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let Some(m) = self.manager.upgrade() else {
            return Ok(());
        };
        let snap = match m.snapshot() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("metrics: reading programs and links failed: {e}");
                return Ok(());
            }
        };
        let mut info: Rows = Vec::new();
        let (mut runs, mut time, mut misses, mut insns, mut jited, mut mem, mut maps): (
            Rows,
            Rows,
            Rows,
            Rows,
            Rows,
            Rows,
            Rows,
        ) = Default::default();
        for p in &snap.programs {
            let mut l = vec![
                kv("id", p.id),
                kv("name", &p.name),
                kv("type", &p.kind),
                kv("owner", p.owner),
                kv(
                    "application",
                    APPLICATION_KEYS
                        .iter()
                        .find_map(|k| p.metadata.get(*k))
                        .map(String::as_str)
                        .unwrap_or(""),
                ),
            ];
            for (key, name) in &self.labels.0 {
                l.push(kv(
                    name,
                    p.metadata.get(key).map(String::as_str).unwrap_or(""),
                ));
            }
            info.push((l, V::U(1)));
            let Some(s) = &p.stats else { continue };
            let k = vec![kv("id", p.id), kv("name", &p.name)];
            runs.push((k.clone(), V::U(s.run_count)));
            time.push((k.clone(), V::F(s.run_time_ns as f64 / 1e9)));
            if let Some(r) = s.recursion_misses {
                misses.push((k.clone(), V::U(r)));
            }
            if s.verified_insns > 0 {
                insns.push((k.clone(), V::U(s.verified_insns as u64)));
            }
            jited.push((k.clone(), V::U(s.jited_bytes as u64)));
            mem.push((k.clone(), V::U(s.memlock_bytes)));
            maps.push((k, V::U(s.map_memlock_bytes)));
        }
        let (mut attached, mut position, mut priority): (Rows, Rows, Rows) = Default::default();
        for l in &snap.links {
            let k = vec![
                kv("link_id", l.id),
                kv("program_id", l.program_id),
                kv("type", &l.kind),
                kv("target", &l.target),
            ];
            attached.push((k.clone(), V::U(l.attached as u64)));
            if let Some(p) = l.position {
                position.push((k.clone(), V::U(p.max(0) as u64)));
            }
            if let Some(p) = l.priority {
                priority.push((k, V::U(p.max(0) as u64)));
            }
        }
        use MetricType::{Counter as C, Gauge as G};
        family(
            &mut enc,
            "program_info",
            "One per managed program: its identity (join other program series on id)",
            G,
            &info,
        )?;
        family(
            &mut enc,
            "program_runs",
            "Runs of the program counted while kernel run statistics were on ([metrics] program_stats)",
            C,
            &runs,
        )?;
        family(
            &mut enc,
            "program_run_time_seconds",
            "Time the program ran, counted while kernel run statistics were on",
            C,
            &time,
        )?;
        family(
            &mut enc,
            "program_recursion_misses",
            "Runs the kernel skipped because the program was already running on that CPU",
            C,
            &misses,
        )?;
        family(
            &mut enc,
            "program_verified_instructions",
            "Instructions the verifier processed when the program was loaded",
            G,
            &insns,
        )?;
        family(
            &mut enc,
            "program_jited_bytes",
            "Size of the program's JIT image",
            G,
            &jited,
        )?;
        family(
            &mut enc,
            "program_memory_bytes",
            "Memory the program holds (memlock)",
            G,
            &mem,
        )?;
        family(
            &mut enc,
            "program_map_memory_bytes",
            "Memory the program's maps hold (memlock; a shared map counts for each program using it)",
            G,
            &maps,
        )?;
        family(
            &mut enc,
            "link_attached",
            "1 when the kernel has the link where the store says, 0 when not (reconciliation repairs it)",
            G,
            &attached,
        )?;
        family(
            &mut enc,
            "link_position",
            "The link's position on its shared hook (0 runs first)",
            G,
            &position,
        )?;
        family(
            &mut enc,
            "link_priority",
            "The link's priority on its hook",
            G,
            &priority,
        )?;
        let counts: Rows = vec![
            (
                vec![kv("object", "program")],
                V::U(snap.programs.len() as u64),
            ),
            (vec![kv("object", "link")], V::U(snap.links.len() as u64)),
        ];
        family(
            &mut enc,
            "managed_objects",
            "Programs and links bpfman manages",
            G,
            &counts,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_keys_become_valid_distinct_label_names() {
        let l = MetadataLabels::new(&[
            "team".into(),
            "bpfman.io/ProgramName".into(),
            "9lives".into(),
        ])
        .expect("valid");
        let names: Vec<&str> = l.0.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(names, ["team", "bpfman_io_ProgramName", "_9lives"]);
        for (bad, why) in [
            (vec!["id".to_string()], "already has"),
            (vec!["a.b".into(), "a-b".into()], "both become label 'a_b'"),
            (vec!["".into()], "empty key"),
            (vec!["__x".into()], "Prometheus's own"),
        ] {
            let e = MetadataLabels::new(&bad).expect_err("refused");
            assert!(
                e.contains("[metrics] metadata_labels") && e.contains(why),
                "{e}"
            );
        }
    }

    #[test]
    fn load_failures_are_classified_by_kind() {
        let ev = Events::default();
        ev.load_failed(&Error::denied("no"));
        ev.load_failed(&Error::unsupported("no fentry"));
        ev.load_failed(&Error::invalid("bad elf"));
        let get = |r: &str| {
            ev.load_failures
                .get_or_create(&ReasonLabels { reason: r.into() })
                .get()
        };
        assert_eq!(
            (get("permission"), get("missing_feature"), get("bad_object")),
            (1, 1, 1)
        );
    }
}
