//! The command-line client: builds API requests, calls the daemon, prints results.
//! It never touches the store or the kernel.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use bpfman_client::{Client, Load};
use bpfman_types::{
    AttachSpec, Direction, KernelProgType, NetHook, ProceedOn, ProgramKind, ProgramSpec, PullPolicy,
};
use serde_json::{Value, json};

use crate::args::{
    AttachArgs, AttachTarget, Command, GetCommand, ListCommand, LoadCommand, LoadCommon, NetArgs,
    Output, SystemCommand,
};
use crate::output;

fn parse_kv(list: &[String], what: &str) -> anyhow::Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for item in list.iter().flat_map(|s| s.split(',')) {
        if item.is_empty() {
            continue;
        }
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| anyhow!("malformed {what} '{item}': expected KEY=VALUE"))?;
        if k.is_empty() {
            bail!("malformed {what} '{item}': the key is empty");
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

fn parse_global(g: &str) -> anyhow::Result<(String, Vec<u8>)> {
    let bad = |why: &str| {
        anyhow!("malformed --global '{g}': {why}; expected NAME=HEX, e.g. drop_proto=06")
    };
    let (name, value) = g.split_once('=').ok_or_else(|| bad("no '='"))?;
    if name.is_empty() {
        return Err(bad("the name is empty"));
    }
    let value = value.trim_start_matches("0x");
    if value.is_empty() || value.len() % 2 != 0 {
        return Err(bad("the value needs an even number of hex digits"));
    }
    let bytes = hex::decode(value).map_err(|_| bad("the value is not hex"))?;
    Ok((name.to_string(), bytes))
}

fn program_spec(spec: &str) -> anyhow::Result<ProgramSpec> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (kind, name, attach) = match parts.as_slice() {
        [k, n] => (*k, *n, None),
        [k, n, a] => (*k, *n, Some(*a)),
        _ => bail!("malformed --programs '{spec}': expected TYPE:FUNCTION[:ATTACH_FUNCTION]"),
    };
    if name.is_empty() {
        bail!("malformed --programs '{spec}': the function name is empty");
    }
    let k: ProgramKind = kind.parse().map_err(|_| {
        anyhow!(
            "unknown program type '{kind}' in --programs '{spec}': use {}",
            ProgramKind::names()
        )
    })?;
    match (k.needs_attach_fn(), attach) {
        (true, None) => {
            let (words, placeholder) = k.attach_fn_words();
            bail!("{k} program '{name}' needs its {words}: --programs {k}:{name}:{placeholder}")
        }
        (false, Some(_)) => bail!(
            "--programs '{spec}': only fentry and fexit (a kernel function) and lsm (a hook) \
             take a third part"
        ),
        _ => {}
    }
    Ok(ProgramSpec {
        name: name.to_string(),
        kind: k,
        attach_fn: attach.map(str::to_string),
    })
}

fn load_common(c: &LoadCommon) -> anyhow::Result<Load> {
    let mut metadata = parse_kv(&c.metadata, "--metadata")?;
    if let Some(app) = &c.application {
        metadata.insert("bpfman_application".into(), app.clone());
    }
    let global_data = c
        .global
        .iter()
        .map(|g| parse_global(g))
        .collect::<anyhow::Result<_>>()?;
    Ok(Load {
        programs: c
            .programs
            .iter()
            .map(|p| program_spec(p))
            .collect::<anyhow::Result<Vec<_>>>()?,
        global_data,
        metadata,
        map_owner_id: c.map_owner_id,
        uuid: None,
    })
}

fn net_hook(
    net: &NetArgs,
    proceed_on: Option<(ProceedOn, &[String])>,
    direction: Option<&str>,
) -> anyhow::Result<NetHook> {
    Ok(NetHook {
        iface: net.iface.clone(),
        priority: net.priority,
        proceed_on: match proceed_on {
            Some((vocabulary, names)) => vocabulary.codes(names)?,
            None => vec![],
        },
        netns: net.netns.clone().filter(|n| !n.is_empty()),
        direction: direction.map(str::parse::<Direction>).transpose()?,
    })
}

/// What `bpfman attach` asks for, and the link's metadata.
fn attach_spec(t: &AttachTarget) -> anyhow::Result<(AttachSpec, HashMap<String, String>)> {
    let md = |m: &[String]| parse_kv(m, "--metadata");
    Ok(match t {
        AttachTarget::Xdp { net, proceed_on } => (
            AttachSpec::Xdp(net_hook(net, Some((ProceedOn::Xdp, proceed_on)), None)?),
            md(&net.metadata)?,
        ),
        AttachTarget::Tc {
            direction,
            net,
            proceed_on,
        } => (
            AttachSpec::Tc(net_hook(
                net,
                Some((ProceedOn::Tc, proceed_on)),
                Some(direction),
            )?),
            md(&net.metadata)?,
        ),
        AttachTarget::Tcx { direction, net } => (
            AttachSpec::Tcx(net_hook(net, None, Some(direction))?),
            md(&net.metadata)?,
        ),
        AttachTarget::Tracepoint {
            tracepoint,
            metadata,
        } => (
            AttachSpec::Tracepoint {
                tracepoint: tracepoint.clone(),
            },
            md(metadata)?,
        ),
        AttachTarget::Kprobe {
            fn_name,
            offset,
            container_pid,
            metadata,
        } => (
            AttachSpec::Kprobe {
                fn_name: fn_name.clone(),
                offset: *offset,
                container_pid: *container_pid,
            },
            md(metadata)?,
        ),
        AttachTarget::Uprobe {
            target,
            fn_name,
            offset,
            pid,
            container_pid,
            metadata,
        } => (
            AttachSpec::Uprobe {
                fn_name: fn_name.clone().filter(|f| !f.is_empty()),
                offset: *offset,
                target: target.clone(),
                pid: *pid,
                container_pid: *container_pid,
            },
            md(metadata)?,
        ),
        AttachTarget::Fentry { metadata } => (AttachSpec::Fentry, md(metadata)?),
        AttachTarget::Fexit { metadata } => (AttachSpec::Fexit, md(metadata)?),
        AttachTarget::Lsm { metadata } => (AttachSpec::Lsm, md(metadata)?),
    })
}

fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Prints `json` for `-o json`, else the table that `table` renders.
fn emit(out: Output, json: &Value, table: impl FnOnce() -> String) -> anyhow::Result<()> {
    match out {
        Output::Json => print_json(json),
        Output::Table => {
            println!("{}", table());
            Ok(())
        }
    }
}

/// Kind names (bpfman's and the kernel's) to the kernel's bpf_prog_type number.
fn kernel_type_number(name: &str) -> anyhow::Result<u32> {
    KernelProgType::number_of(name).ok_or_else(|| anyhow!("unknown program type '{name}'"))
}

/// An absolute path goes to the daemon as given, so what it checks (it refuses `.` and
/// `..` components) is what the user typed; a relative one is made absolute against the
/// working directory, which the daemon does not know.
fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))
}

static ON_BEHALF_OF: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// `--on-behalf-of-namespace`, for every connection this run makes.
pub fn set_on_behalf_of(ns: Option<String>) {
    let _ = ON_BEHALF_OF.set(ns);
}

/// A connection to the daemon, acting for the namespace `--on-behalf-of-namespace` names.
pub async fn connect(socket: &Path) -> bpfman_client::Result<Client> {
    let c = Client::connect(socket).await?;
    match ON_BEHALF_OF.get().and_then(|n| n.as_deref()) {
        Some(ns) => c.on_behalf_of_namespace(ns),
        None => Ok(c),
    }
}

pub fn run(cmd: Command, socket: PathBuf, out: Output) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(cmd, socket, out))
}

async fn run_async(cmd: Command, socket: PathBuf, out: Output) -> anyhow::Result<()> {
    // Parse everything the user typed before connecting, so typos fail fast.
    match cmd {
        Command::Daemon(_) => unreachable_daemon(),
        Command::Load(load) => run_load(load, &socket, out).await,
        Command::Unload { id } => {
            connect(&socket).await?.unload(id).await?;
            emit(out, &json!({ "unloaded": id }), || {
                format!("unloaded program {id}")
            })
        }
        Command::Attach(AttachArgs { program_id, target }) => {
            let (spec, metadata) = attach_spec(&target)?;
            let mut c = connect(&socket).await?;
            let link_id = c.attach(program_id, &spec, metadata).await?;
            emit(
                out,
                &json!({ "link_id": link_id, "program_id": program_id }),
                || format!("attached program {program_id}: link {link_id}"),
            )
        }
        Command::Detach { link_id } => {
            connect(&socket).await?.detach(link_id).await?;
            emit(out, &json!({ "detached": link_id }), || {
                format!("detached link {link_id}")
            })
        }
        Command::List(ListCommand::Programs {
            program_type,
            application,
            metadata_selector,
            all,
        }) => {
            let mut match_metadata = parse_kv(&metadata_selector, "--metadata-selector")?;
            if let Some(app) = application {
                match_metadata.insert("bpfman_application".into(), app);
            }
            let kt = program_type
                .as_deref()
                .map(kernel_type_number)
                .transpose()?;
            // bpfman kinds finer than the kernel's (kretprobe vs kprobe) filter here.
            let finer = program_type
                .as_deref()
                .and_then(|t| t.parse::<ProgramKind>().ok())
                .filter(|k| k.finer_than_kernel());
            let mut c = connect(&socket).await?;
            let results = c.list(kt, all, match_metadata).await?;
            let recs = c.program_records().await?;
            let progs: Vec<Value> = results
                .iter()
                .filter_map(|p| {
                    let k = p.kernel_info.as_ref()?;
                    let rec = recs.get(&k.id);
                    if let (Some(want), Some(rec)) = (finer, rec)
                        && rec.kind != want.as_str()
                    {
                        return None;
                    }
                    Some(output::program_json(p.info.as_ref(), k, rec))
                })
                .collect();
            emit_programs(out, progs)
        }
        Command::List(ListCommand::Links { program_id }) => {
            let links = connect(&socket).await?.list_links(program_id).await?;
            emit(
                out,
                &Value::Array(links.iter().map(output::link_json).collect()),
                || output::links_table(&links),
            )
        }
        Command::Get(GetCommand::Program { id }) => {
            let mut c = connect(&socket).await?;
            let r = c.get(id).await?;
            let recs = c.program_records().await?;
            let k = r
                .kernel_info
                .ok_or_else(|| anyhow!("the daemon returned no kernel info for program {id}"))?;
            let v = output::program_json(r.info.as_ref(), &k, recs.get(&id));
            emit(out, &v, || output::program_detail(&v))
        }
        Command::Get(GetCommand::Link { link_id }) => {
            let l = connect(&socket).await?.get_link(link_id).await?;
            emit(out, &output::link_json(&l), || output::link_detail(&l))
        }
        Command::Image(cmd) => crate::image::run(cmd, &socket, out, |o, v, t| emit(o, v, t)).await,
        Command::System(SystemCommand::Reconcile) => {
            let r = connect(&socket).await?.reconcile().await?;
            match out {
                Output::Json => print_json(&json!({ "actions": r.actions })),
                Output::Table => {
                    if r.actions.is_empty() {
                        println!("store, bpffs and kernel agree");
                    }
                    for a in &r.actions {
                        println!("{a}");
                    }
                    Ok(())
                }
            }
        }
        Command::System(SystemCommand::Reload) => {
            let r = connect(&socket).await?.reload().await?;
            match out {
                Output::Json => print_json(&json!({ "config": r.config, "rules": r.rules })),
                Output::Table => {
                    println!("reloaded {}: {} policy rules", r.config, r.rules);
                    Ok(())
                }
            }
        }
        Command::System(SystemCommand::Info) => {
            let i = connect(&socket).await?.system_info().await?;
            system_info(out, &i)
        }
    }
}

fn emit_programs(out: Output, progs: Vec<Value>) -> anyhow::Result<()> {
    let v = Value::Array(progs);
    emit(out, &v, || {
        output::programs_table(v.as_array().map(Vec::as_slice).unwrap_or_default())
    })
}

async fn run_load(load: LoadCommand, socket: &Path, out: Output) -> anyhow::Result<()> {
    let mut req = match &load {
        LoadCommand::File { path, common } => {
            let f = absolute(path)?.display().to_string();
            load_common(common)?.from_file(&f)
        }
        LoadCommand::Image {
            image_url,
            pull_policy,
            registry_auth,
            common,
        } => {
            let policy =
                PullPolicy::parse(pull_policy).map_err(|e| anyhow!("--pull-policy: {e}"))?;
            let auth = registry_auth
                .as_deref()
                .map(bpfman_client::registry_auth_from_base64)
                .transpose()?;
            load_common(common)?.from_image(image_url, policy, auth)
        }
    };
    let mut c = connect(socket).await?;
    // Pull first through the streaming call, so a terminal shows progress; the load
    // then finds the image in the cache.
    if let Some(bpfman_client::v1_proto::bytecode_location::Location::Image(i)) =
        req.bytecode.as_mut().and_then(|b| b.location.as_mut())
        && i.image_pull_policy != PullPolicy::Never.as_i32()
    {
        let pulled = crate::image::pull_with_progress(
            &mut c,
            bpfman_client::ext_proto::PullImageRequest {
                url: i.url.clone(),
                image_pull_policy: i.image_pull_policy,
                username: i.username.clone(),
                password: i.password.clone(),
            },
        )
        .await?;
        i.url = pulled.reference;
        i.image_pull_policy = PullPolicy::IfNotPresent.as_i32();
    }
    let resp = c.load(req).await?;
    let recs = c.program_records().await?;
    let progs: Vec<Value> = resp
        .programs
        .iter()
        .filter_map(|p| {
            let k = p.kernel_info.as_ref()?;
            Some(output::program_json(p.info.as_ref(), k, recs.get(&k.id)))
        })
        .collect();
    emit_programs(out, progs)
}

fn system_info(
    out: Output,
    i: &bpfman_client::ext_proto::SystemInfoResponse,
) -> anyhow::Result<()> {
    match out {
        Output::Json => print_json(&json!({
            "kernel_release": i.kernel_release,
            "features": i.features.iter().map(|f| (f.name.clone(), json!({"supported": f.supported, "detail": f.detail}))).collect::<serde_json::Map<_, _>>(),
            "daemon_version": i.daemon_version,
            "daemon_pid": i.daemon_pid,
            "runtime_dir": i.runtime_dir,
            "bpffs": i.bpffs,
            "database": i.database,
            "socket": i.socket,
            "programs": i.programs,
            "links": i.links,
            "tables": i.tables,
        })),
        Output::Table => {
            println!("kernel:  {}", i.kernel_release);
            println!(
                "daemon:  bpfman {} (pid {})",
                i.daemon_version, i.daemon_pid
            );
            println!("runtime: {}", i.runtime_dir);
            println!("bpffs:   {}", i.bpffs);
            println!("store:   {}", i.database);
            println!("socket:  {}", i.socket);
            println!("managed: {} programs, {} links", i.programs, i.links);
            println!("\nkernel features:");
            for f in &i.features {
                println!(
                    "  {:<10} {:<4} {}",
                    f.name,
                    if f.supported { "yes" } else { "no" },
                    f.detail
                );
            }
            Ok(())
        }
    }
}

fn unreachable_daemon() -> anyhow::Result<()> {
    bail!("the daemon is not a client command")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globals_parse_or_say_why() {
        assert_eq!(
            parse_global("x=0a0B").ok(),
            Some(("x".into(), vec![10, 11]))
        );
        for bad in ["x", "=01", "x=1", "x=zz", "x="] {
            let e = parse_global(bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains("NAME=HEX"), "{bad}: {e}");
        }
    }

    #[test]
    fn programs_parse() {
        assert!(program_spec("xdp:f").is_ok());
        assert!(program_spec("fentry:f:do_unlinkat").is_ok());
        assert!(program_spec("fentry:f").is_err());
        assert!(program_spec("xdp:f:g").is_err());
        assert!(program_spec("socket:f").is_err());
        assert_eq!(
            program_spec("kretprobe:f").map(|p| p.kind).ok(),
            Some(ProgramKind::Kretprobe)
        );
    }
}
