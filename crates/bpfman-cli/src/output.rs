//! Rendering results as human tables or one JSON document on stdout.

use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use serde_json::{Value, json};

use bpfman_client::{ext_proto as ext, v1_proto as v1};

/// Kernel `bpf_prog_type` numbers to names, for programs bpfman did not load.
pub fn kernel_type_name(t: u32) -> &'static str {
    bpfman_types::KernelProgType::name_of(t)
}

/// A program as JSON: `id`, `name`, `type` first, then the rest.
pub fn program_json(
    info: Option<&v1::ProgramInfo>,
    k: &v1::KernelProgramInfo,
    rec: Option<&ext::ProgramRecord>,
) -> Value {
    let kind = rec
        .map(|r| r.kind.clone())
        .unwrap_or_else(|| kernel_type_name(k.program_type).to_string());
    let name = info
        .map(|i| i.name.clone())
        .unwrap_or_else(|| k.name.clone());
    let mut v = json!({
        "id": k.id,
        "name": name,
        "type": kind,
        "managed": info.is_some(),
        "kernel": {
            "name": k.name,
            "program_type": kernel_type_name(k.program_type),
            "loaded_at": k.loaded_at,
            "tag": k.tag,
            "gpl_compatible": k.gpl_compatible,
            "map_ids": k.map_ids,
            "btf_id": k.btf_id,
            "bytes_xlated": k.bytes_xlated,
            "jited": k.jited,
            "bytes_jited": k.bytes_jited,
            "bytes_memlock": k.bytes_memlock,
            "verified_insns": k.verified_insns,
        },
    });
    if let (Some(i), Value::Object(o)) = (info, &mut v) {
        let bytecode = match i.bytecode.as_ref().and_then(|b| b.location.as_ref()) {
            Some(v1::bytecode_location::Location::File(f)) => json!({ "file": f }),
            Some(v1::bytecode_location::Location::Image(img)) => json!({ "image": img.url }),
            None => Value::Null,
        };
        let globals: serde_json::Map<String, Value> = i
            .global_data
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(hex::encode(v))))
            .collect();
        o.insert("bytecode".into(), bytecode);
        o.insert("links".into(), json!(i.links));
        o.insert("metadata".into(), json!(i.metadata));
        o.insert("global_data".into(), Value::Object(globals));
        o.insert("map_owner_id".into(), json!(i.map_owner_id));
        o.insert("map_pin_path".into(), json!(i.map_pin_path));
        o.insert("map_used_by".into(), json!(i.map_used_by));
        o.insert(
            "application".into(),
            json!(i.metadata.get("bpfman_application")),
        );
    }
    if let (Some(r), Value::Object(o)) = (rec, &mut v) {
        o.insert("owner_uid".into(), json!(r.owner.as_ref().map(|w| w.uid)));
        o.insert("created_at".into(), json!(r.created_at));
        o.insert("pin_path".into(), json!(r.pin_path));
        o.insert("attach_fn".into(), json!(r.attach_fn));
        if let Some(Value::Object(kernel)) = o.get_mut("kernel") {
            match (r.run_count, r.run_time_ns) {
                (Some(n), Some(ns)) => {
                    kernel.insert("run_count".into(), json!(n));
                    kernel.insert("run_time_ns".into(), json!(ns));
                }
                _ => {
                    kernel.insert(
                        "run_stats".into(),
                        json!("off (turn on with [metrics] program_stats in the daemon's config)"),
                    );
                }
            }
        }
    }
    v
}

pub fn link_json(l: &ext::LinkInfo) -> Value {
    json!({
        "link_id": l.link_id,
        "program_id": l.program_id,
        "program_name": l.program_name,
        "type": l.kind,
        "target": l.target,
        "iface": l.iface,
        "direction": l.direction,
        "priority": l.priority,
        "position": l.position,
        "proceed_on": l.proceed_on,
        "netns": l.netns,
        "kernel_link_id": l.kernel_link_id,
        "pin_path": l.pin_path,
        "metadata": l.metadata,
        "owner_uid": l.owner.as_ref().map(|o| o.uid),
        "created_at": l.created_at,
        "details": l.details,
        "dispatcher_revision": l.dispatcher_revision,
    })
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY);
    t.set_header(header.to_vec());
    t
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(s).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

pub fn programs_table(progs: &[Value]) -> String {
    let mut t = table(&[
        "ID",
        "NAME",
        "TYPE",
        "OWNER",
        "LINKS",
        "LOADED AT",
        "MANAGED",
    ]);
    for p in progs {
        t.add_row(vec![
            s(&p["id"]),
            s(&p["name"]),
            s(&p["type"]),
            s(&p["owner_uid"]),
            s(&p["links"]),
            s(&p["kernel"]["loaded_at"]),
            if p["managed"] == Value::Bool(true) {
                "yes".into()
            } else {
                "no".into()
            },
        ]);
    }
    t.to_string()
}

pub fn program_detail(p: &Value) -> String {
    let mut t = table(&["FIELD", "VALUE"]);
    let order = [
        "id",
        "name",
        "type",
        "owner_uid",
        "created_at",
        "bytecode",
        "attach_fn",
        "application",
        "metadata",
        "global_data",
        "links",
        "map_owner_id",
        "map_pin_path",
        "map_used_by",
        "pin_path",
    ];
    for k in order {
        if let Some(v) = p.get(k) {
            let text = match v {
                Value::Object(_) => v.to_string(),
                other => s(other),
            };
            t.add_row(vec![k.to_string(), text]);
        }
    }
    if let Some(Value::Object(k)) = p.get("kernel") {
        for (name, v) in k {
            t.add_row(vec![format!("kernel.{name}"), s(v)]);
        }
    }
    t.to_string()
}

pub fn links_table(links: &[ext::LinkInfo]) -> String {
    let mut t = table(&[
        "LINK", "PROGRAM", "NAME", "TYPE", "TARGET", "PRIORITY", "POSITION", "OWNER",
    ]);
    for l in links {
        let net = !l.iface.is_empty();
        t.add_row(vec![
            l.link_id.to_string(),
            l.program_id.to_string(),
            l.program_name.clone(),
            l.kind.clone(),
            l.target.clone(),
            if net {
                l.priority.to_string()
            } else {
                String::new()
            },
            if net {
                l.position.to_string()
            } else {
                String::new()
            },
            l.owner
                .as_ref()
                .map(|o| o.uid.to_string())
                .unwrap_or_default(),
        ]);
    }
    t.to_string()
}

pub fn link_detail(l: &ext::LinkInfo) -> String {
    let v = link_json(l);
    let mut t = table(&["FIELD", "VALUE"]);
    if let Value::Object(o) = v {
        for (k, v) in o {
            let text = match &v {
                Value::Object(_) => v.to_string(),
                other => s(other),
            };
            t.add_row(vec![k, text]);
        }
    }
    t.to_string()
}
