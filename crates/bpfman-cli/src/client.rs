//! The command-line client: builds API requests, calls the daemon, prints results.
//! It never touches the store or the kernel.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use bpfman::manager::{TC_PROCEED_ON, XDP_PROCEED_ON};
use bpfman_api::ext::{self, bpfman_ext_client::BpfmanExtClient};
use bpfman_api::v1::{self, bpfman_client::BpfmanClient};
use serde_json::{Value, json};
use tonic::transport::{Channel, Endpoint};

use crate::args::{
    AttachArgs, AttachTarget, Command, GetCommand, ListCommand, LoadCommand, LoadCommon, NetArgs,
    Output, SystemCommand,
};
use crate::output;

struct Clients {
    v1: BpfmanClient<Channel>,
    ext: BpfmanExtClient<Channel>,
}

async fn connect(socket: &Path) -> anyhow::Result<Clients> {
    let uri = format!("unix://{}", socket.display());
    let channel = Endpoint::from_shared(uri)?.connect().await.map_err(|e| {
        let hint = match std::os::unix::net::UnixStream::connect(socket) {
            Err(io) if io.kind() == std::io::ErrorKind::PermissionDenied => {
                "permission denied: only root and the daemon's socket group may connect".to_string()
            }
            Err(io) if io.kind() == std::io::ErrorKind::NotFound => {
                "no such socket: is `bpfman daemon` running? (--socket / BPFMAN_SOCKET)".to_string()
            }
            Err(io) => io.to_string(),
            Ok(_) => e.to_string(),
        };
        anyhow!(
            "cannot connect to the daemon at {}: {hint}",
            socket.display()
        )
    })?;
    // Replies (a long listing) may be larger than tonic's default 4 MiB.
    Ok(Clients {
        v1: BpfmanClient::new(channel.clone()).max_decoding_message_size(MAX_REPLY),
        ext: BpfmanExtClient::new(channel).max_decoding_message_size(MAX_REPLY),
    })
}

/// The extension-service client alone (image commands).
pub async fn connect_ext(socket: &Path) -> anyhow::Result<BpfmanExtClient<Channel>> {
    Ok(connect(socket).await?.ext)
}

const MAX_REPLY: usize = 64 << 20;

/// Turns a gRPC status into the daemon's message. A status without one (the connection
/// dropped, the daemon died, a transport error) still says what happened: its code and
/// the underlying error, never an empty line.
fn call_err(s: tonic::Status) -> anyhow::Error {
    use std::error::Error as _;
    let transport = matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown);
    if !s.message().is_empty() && !transport {
        return anyhow!("{}", s.message());
    }
    let mut why = if s.message().is_empty() {
        format!(
            "the call failed with gRPC status {:?} and no message",
            s.code()
        )
    } else {
        s.message().to_string()
    };
    let mut src = s.source();
    while let Some(e) = src {
        let text = e.to_string();
        if !why.contains(&text) {
            why = format!("{why}: {text}");
        }
        src = e.source();
    }
    if transport {
        why.push_str(
            " (the daemon stopped or closed the connection; it refuses connections over \
             [api] max_connections_per_uid or max_connections and closes idle ones: see its log)",
        );
    }
    anyhow!(why)
}

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

fn load_info(spec: &str) -> anyhow::Result<v1::LoadInfo> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (kind, name, attach) = match parts.as_slice() {
        [k, n] => (*k, *n, None),
        [k, n, a] => (*k, *n, Some(*a)),
        _ => bail!("malformed --programs '{spec}': expected TYPE:FUNCTION[:ATTACH_FUNCTION]"),
    };
    if name.is_empty() {
        bail!("malformed --programs '{spec}': the function name is empty");
    }
    use v1::BpfmanProgramType as T;
    let t = match kind {
        "xdp" => T::Xdp,
        "tc" => T::Tc,
        "tcx" => T::Tcx,
        "tracepoint" => T::Tracepoint,
        "kprobe" | "kretprobe" => T::Kprobe,
        "uprobe" | "uretprobe" => T::Uprobe,
        "fentry" => T::Fentry,
        "fexit" => T::Fexit,
        "lsm" => T::Lsm,
        other => bail!(
            "unknown program type '{other}' in --programs '{spec}': use xdp, tc, tcx, tracepoint, \
             kprobe, kretprobe, uprobe, uretprobe, fentry, fexit or lsm"
        ),
    };
    let info = match (t, attach) {
        (T::Fentry, Some(f)) => Some(v1::prog_specific_info::Info::FentryLoadInfo(
            v1::FentryLoadInfo { fn_name: f.into() },
        )),
        (T::Fexit, Some(f)) => Some(v1::prog_specific_info::Info::FexitLoadInfo(
            v1::FexitLoadInfo { fn_name: f.into() },
        )),
        (T::Lsm, Some(h)) => Some(v1::prog_specific_info::Info::LsmLoadInfo(v1::LsmLoadInfo {
            hook_name: h.into(),
        })),
        (T::Fentry | T::Fexit, None) => bail!(
            "{kind} program '{name}' needs the kernel function: --programs {kind}:{name}:FUNCTION"
        ),
        (T::Lsm, None) => bail!(
            "lsm program '{name}' needs its LSM hook: --programs lsm:{name}:HOOK (e.g. file_open)"
        ),
        (_, Some(_)) => bail!(
            "--programs '{spec}': only fentry and fexit (a kernel function) and lsm (a hook) \
             take a third part"
        ),
        _ => None,
    };
    Ok(v1::LoadInfo {
        name: name.to_string(),
        program_type: t as i32,
        info: info.map(|i| v1::ProgSpecificInfo { info: Some(i) }),
    })
}

fn load_request(
    location: v1::bytecode_location::Location,
    c: &LoadCommon,
) -> anyhow::Result<v1::LoadRequest> {
    let mut metadata = parse_kv(&c.metadata, "--metadata")?;
    if let Some(app) = &c.application {
        metadata.insert("bpfman_application".into(), app.clone());
    }
    let global_data = c
        .global
        .iter()
        .map(|g| parse_global(g))
        .collect::<anyhow::Result<HashMap<_, _>>>()?;
    Ok(v1::LoadRequest {
        bytecode: Some(v1::BytecodeLocation {
            location: Some(location),
        }),
        metadata,
        global_data,
        uuid: None,
        map_owner_id: c.map_owner_id,
        info: c
            .programs
            .iter()
            .map(|p| load_info(p))
            .collect::<anyhow::Result<Vec<_>>>()?,
    })
}

fn proceed_on(names: &[String], table: &[(&str, i32)], kind: &str) -> anyhow::Result<Vec<i32>> {
    names
        .iter()
        .flat_map(|n| n.split(','))
        .filter(|n| !n.is_empty())
        .map(|n| {
            table
                .iter()
                .find(|(name, _)| *name == n)
                .map(|(_, c)| *c)
                .ok_or_else(|| {
                    let all: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
                    anyhow!("unknown {kind} --proceed-on '{n}': use {}", all.join(", "))
                })
        })
        .collect()
}

fn attach_info(t: &AttachTarget) -> anyhow::Result<v1::attach_info::Info> {
    use v1::attach_info::Info;
    let md = |m: &[String]| parse_kv(m, "--metadata");
    Ok(match t {
        AttachTarget::Xdp { net, proceed_on: p } => {
            let NetArgs {
                iface,
                priority,
                netns,
                metadata,
            } = net;
            Info::XdpAttachInfo(v1::XdpAttachInfo {
                priority: *priority,
                iface: iface.clone(),
                position: 0,
                proceed_on: proceed_on(p, XDP_PROCEED_ON, "xdp")?,
                netns: netns.clone(),
                metadata: md(metadata)?,
            })
        }
        AttachTarget::Tc {
            direction,
            net,
            proceed_on: p,
        } => Info::TcAttachInfo(v1::TcAttachInfo {
            priority: net.priority,
            iface: net.iface.clone(),
            position: 0,
            direction: direction.clone(),
            proceed_on: proceed_on(p, TC_PROCEED_ON, "tc")?,
            netns: net.netns.clone(),
            metadata: md(&net.metadata)?,
        }),
        AttachTarget::Tcx { direction, net } => Info::TcxAttachInfo(v1::TcxAttachInfo {
            priority: net.priority,
            iface: net.iface.clone(),
            position: 0,
            direction: direction.clone(),
            netns: net.netns.clone(),
            metadata: md(&net.metadata)?,
        }),
        AttachTarget::Tracepoint {
            tracepoint,
            metadata,
        } => Info::TracepointAttachInfo(v1::TracepointAttachInfo {
            tracepoint: tracepoint.clone(),
            metadata: md(metadata)?,
        }),
        AttachTarget::Kprobe {
            fn_name,
            offset,
            container_pid,
            metadata,
        } => Info::KprobeAttachInfo(v1::KprobeAttachInfo {
            fn_name: fn_name.clone(),
            offset: *offset,
            container_pid: *container_pid,
            metadata: md(metadata)?,
        }),
        AttachTarget::Uprobe {
            target,
            fn_name,
            offset,
            pid,
            container_pid,
            metadata,
        } => Info::UprobeAttachInfo(v1::UprobeAttachInfo {
            fn_name: fn_name.clone(),
            offset: *offset,
            target: target.clone(),
            pid: *pid,
            container_pid: *container_pid,
            metadata: md(metadata)?,
        }),
        AttachTarget::Fentry { metadata } => Info::FentryAttachInfo(v1::FentryAttachInfo {
            metadata: md(metadata)?,
        }),
        AttachTarget::Fexit { metadata } => Info::FexitAttachInfo(v1::FexitAttachInfo {
            metadata: md(metadata)?,
        }),
        AttachTarget::Lsm { metadata } => Info::LsmAttachInfo(v1::LsmAttachInfo {
            metadata: md(metadata)?,
        }),
    })
}

/// bpfman's own records (kind, owner) by program id.
async fn records(c: &mut Clients) -> anyhow::Result<HashMap<u32, ext::ProgramRecord>> {
    let r = c
        .ext
        .list_program_records(ext::ListProgramRecordsRequest {})
        .await
        .map_err(call_err)?
        .into_inner();
    Ok(r.programs.into_iter().map(|p| (p.id, p)).collect())
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
    let n = match name {
        "xdp" => 6,
        "tc" | "tcx" | "sched_cls" => 3,
        "tracepoint" => 5,
        "kprobe" | "kretprobe" | "uprobe" | "uretprobe" => 2,
        "fentry" | "fexit" | "tracing" => 26,
        "lsm" => 29,
        other => (0..64)
            .find(|n| output::kernel_type_name(*n) == other)
            .ok_or_else(|| anyhow!("unknown program type '{other}'"))?,
    };
    Ok(n)
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
        Command::Load(load) => {
            let req = match &load {
                LoadCommand::File { path, common } => {
                    let f = absolute(path)?.display().to_string();
                    load_request(v1::bytecode_location::Location::File(f), common)?
                }
                LoadCommand::Image {
                    image_url,
                    pull_policy,
                    registry_auth,
                    common,
                } => {
                    let policy = bpfman::image::PullPolicy::parse(pull_policy)
                        .map_err(|e| anyhow!("--pull-policy: {e}"))?
                        .as_i32();
                    let creds = match registry_auth {
                        Some(a) => bpfman::image::registry::Credentials::from_base64(a)
                            .map_err(|e| anyhow!("{e}"))?,
                        None => Default::default(),
                    };
                    let (username, password) = (creds.username, creds.password);
                    load_request(
                        v1::bytecode_location::Location::Image(v1::BytecodeImage {
                            url: image_url.clone(),
                            image_pull_policy: policy,
                            username,
                            password,
                        }),
                        common,
                    )?
                }
            };
            let mut c = connect(&socket).await?;
            let mut req = req;
            // Pull first through the streaming call, so a terminal shows progress; the
            // load then finds the image in the cache.
            if let Some(v1::bytecode_location::Location::Image(i)) =
                req.bytecode.as_mut().and_then(|b| b.location.as_mut())
                && i.image_pull_policy != 2
            {
                let pulled = crate::image::pull_with_progress(
                    &mut c.ext,
                    ext::PullImageRequest {
                        url: i.url.clone(),
                        image_pull_policy: i.image_pull_policy,
                        username: i.username.clone(),
                        password: i.password.clone(),
                    },
                )
                .await?;
                i.url = pulled.reference;
                i.image_pull_policy = 1;
            }
            let resp = c.v1.load(req).await.map_err(call_err)?.into_inner();
            let recs = records(&mut c).await?;
            let progs: Vec<Value> = resp
                .programs
                .iter()
                .filter_map(|p| {
                    let k = p.kernel_info.as_ref()?;
                    Some(output::program_json(p.info.as_ref(), k, recs.get(&k.id)))
                })
                .collect();
            {
                let v = Value::Array(progs);
                emit(out, &v, || {
                    output::programs_table(v.as_array().map(Vec::as_slice).unwrap_or_default())
                })
            }
        }
        Command::Unload { id } => {
            let mut c = connect(&socket).await?;
            c.v1.unload(v1::UnloadRequest { id })
                .await
                .map_err(call_err)?;
            emit(out, &json!({ "unloaded": id }), || {
                format!("unloaded program {id}")
            })
        }
        Command::Attach(AttachArgs { program_id, target }) => {
            let info = attach_info(&target)?;
            let mut c = connect(&socket).await?;
            let r =
                c.v1.attach(v1::AttachRequest {
                    id: program_id,
                    attach: Some(v1::AttachInfo { info: Some(info) }),
                })
                .await
                .map_err(call_err)?
                .into_inner();
            emit(
                out,
                &json!({ "link_id": r.link_id, "program_id": program_id }),
                || format!("attached program {program_id}: link {}", r.link_id),
            )
        }
        Command::Detach { link_id } => {
            let mut c = connect(&socket).await?;
            c.v1.detach(v1::DetachRequest { link_id })
                .await
                .map_err(call_err)?;
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
            let kind_filter = program_type.clone();
            let kt = program_type
                .as_deref()
                .map(kernel_type_number)
                .transpose()?;
            let mut c = connect(&socket).await?;
            let r =
                c.v1.list(v1::ListRequest {
                    program_type: kt,
                    bpfman_programs_only: Some(!all),
                    match_metadata,
                })
                .await
                .map_err(call_err)?
                .into_inner();
            let recs = records(&mut c).await?;
            let progs: Vec<Value> = r
                .results
                .iter()
                .filter_map(|p| {
                    let k = p.kernel_info.as_ref()?;
                    let rec = recs.get(&k.id);
                    // bpfman kinds finer than the kernel's (kretprobe vs kprobe) filter here.
                    if let (Some(want), Some(rec)) = (&kind_filter, rec)
                        && [
                            "tc",
                            "tcx",
                            "kprobe",
                            "kretprobe",
                            "uprobe",
                            "uretprobe",
                            "fentry",
                            "fexit",
                            "lsm",
                        ]
                        .contains(&want.as_str())
                        && rec.kind != *want
                    {
                        return None;
                    }
                    Some(output::program_json(p.info.as_ref(), k, rec))
                })
                .collect();
            {
                let v = Value::Array(progs);
                emit(out, &v, || {
                    output::programs_table(v.as_array().map(Vec::as_slice).unwrap_or_default())
                })
            }
        }
        Command::List(ListCommand::Links { program_id }) => {
            let mut c = connect(&socket).await?;
            let r = c
                .ext
                .list_links(ext::ListLinksRequest { program_id })
                .await
                .map_err(call_err)?
                .into_inner();
            emit(
                out,
                &Value::Array(r.links.iter().map(output::link_json).collect()),
                || output::links_table(&r.links),
            )
        }
        Command::Get(GetCommand::Program { id }) => {
            let mut c = connect(&socket).await?;
            let r =
                c.v1.get(v1::GetRequest { id })
                    .await
                    .map_err(call_err)?
                    .into_inner();
            let recs = records(&mut c).await?;
            let k = r
                .kernel_info
                .ok_or_else(|| anyhow!("the daemon returned no kernel info for program {id}"))?;
            let v = output::program_json(r.info.as_ref(), &k, recs.get(&id));
            emit(out, &v, || output::program_detail(&v))
        }
        Command::Get(GetCommand::Link { link_id }) => {
            let mut c = connect(&socket).await?;
            let l = c
                .ext
                .get_link(ext::GetLinkRequest { link_id })
                .await
                .map_err(call_err)?
                .into_inner();
            emit(out, &output::link_json(&l), || output::link_detail(&l))
        }
        Command::Image(cmd) => crate::image::run(cmd, &socket, out, |o, v, t| emit(o, v, t)).await,
        Command::System(SystemCommand::Reconcile) => {
            let mut c = connect(&socket).await?;
            let r = c
                .ext
                .reconcile(ext::ReconcileRequest {})
                .await
                .map_err(call_err)?
                .into_inner();
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
            let mut c = connect(&socket).await?;
            let r = c
                .ext
                .reload(ext::ReloadRequest {})
                .await
                .map_err(call_err)?
                .into_inner();
            match out {
                Output::Json => print_json(&json!({ "config": r.config, "rules": r.rules })),
                Output::Table => {
                    println!("reloaded {}: {} policy rules", r.config, r.rules);
                    Ok(())
                }
            }
        }
        Command::System(SystemCommand::Info) => {
            let mut c = connect(&socket).await?;
            let i = c
                .ext
                .system_info(ext::SystemInfoRequest {})
                .await
                .map_err(call_err)?
                .into_inner();
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
        assert!(load_info("xdp:f").is_ok());
        assert!(load_info("fentry:f:do_unlinkat").is_ok());
        assert!(load_info("fentry:f").is_err());
        assert!(load_info("xdp:f:g").is_err());
        assert!(load_info("socket:f").is_err());
    }

    #[test]
    fn auth_decodes() {
        // "alice:s3cret"
        let c = bpfman::image::registry::Credentials::from_base64("YWxpY2U6czNjcmV0").ok();
        assert_eq!(
            c.map(|c| (c.username, c.password)),
            Some((Some("alice".into()), Some("s3cret".into())))
        );
    }
}
