//! The gRPC layer: translates requests into manager calls and results back. No rules here.

use std::collections::BTreeMap;
use std::sync::Arc;

use bpfman::image::registry::Credentials;
use bpfman::image::{ImageRecord, PullPolicy};
use bpfman::manager::{LinkView, ListFilter, Manager, ProgramView};
use bpfman::model::{AttachSpec, Caller, LoadRequest, Program};
use bpfman::{Error, ErrorKind};
use bpfman_api::ext::{self, bpfman_ext_server::BpfmanExt};
use bpfman_api::v1::{self, bpfman_server::Bpfman};
use bpfman_types::{metadata as keys, proto};
use tonic::{Request, Response, Status};

use crate::admission::PeerInfo;
use tracing::warn;

#[derive(Clone)]
pub struct Service {
    pub manager: Arc<Manager>,
    pub version: &'static str,
    /// The config file the daemon was started with (re-read on reload).
    pub config_path: std::path::PathBuf,
}

/// The one mapping from error kinds to gRPC codes, chosen for a controller's retry loop
/// (docs/api.md "Status codes"): UNAVAILABLE, RESOURCE_EXHAUSTED and ABORTED are safe to
/// retry unchanged; INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION and
/// PERMISSION_DENIED need a changed request or state; INTERNAL means "read the state".
fn status(e: Error) -> Status {
    let m = e.message();
    match e.kind() {
        ErrorKind::InvalidArgument => Status::invalid_argument(m),
        ErrorKind::NotFound => Status::not_found(m),
        ErrorKind::AlreadyExists => Status::already_exists(m),
        ErrorKind::FailedPrecondition | ErrorKind::Unsupported => Status::failed_precondition(m),
        ErrorKind::PermissionDenied => Status::permission_denied(m),
        // The kernel refused: a busy or interrupted call may pass later; a refusal
        // (the verifier, an attach the hook does not take) needs a change.
        ErrorKind::Kernel if e.is_transient() => Status::unavailable(m),
        ErrorKind::Kernel => Status::failed_precondition(m),
        ErrorKind::Conflict => Status::aborted(m),
        ErrorKind::Internal => Status::internal(m),
        ErrorKind::ResourceExhausted => Status::resource_exhausted(m),
        ErrorKind::Cancelled => Status::cancelled(m),
    }
}

fn invalid(e: bpfman_types::Invalid) -> Status {
    Status::invalid_argument(e.0)
}

/// The caller, from the kernel's credentials of the connection (SO_PEERCRED).
fn caller<T>(req: &Request<T>) -> Result<Caller, Status> {
    req.extensions()
        .get::<PeerInfo>()
        .and_then(|i| i.caller())
        .ok_or_else(|| Status::unauthenticated("no peer credentials on this connection"))
}

/// The request header with which root (the Kubernetes agent) asks to act on behalf of a
/// tenant: `kubernetes-namespace/NAME`.
pub const ON_BEHALF_OF: &str = bpfman_types::metadata::ON_BEHALF_OF_HEADER;

impl Service {
    /// The caller: the connection's credentials, or the tenant root asks to act for
    /// (`bpfman-on-behalf-of`; refused for anyone but root, and for a value that is not a
    /// Kubernetes namespace).
    fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let real = caller(req)?;
        let Some(v) = req.metadata().get(ON_BEHALF_OF) else {
            return Ok(real);
        };
        let v = v.to_str().map_err(|_| {
            Status::invalid_argument(format!("the {ON_BEHALF_OF} header is not text"))
        })?;
        let Some(ns) = v.strip_prefix("kubernetes-namespace/") else {
            return Err(Status::invalid_argument(format!(
                "the {ON_BEHALF_OF} header must be kubernetes-namespace/NAME"
            )));
        };
        self.manager
            .on_behalf_of_namespace(real, ns)
            .map_err(status)
    }

    /// Runs a manager call on a blocking thread (kernel work blocks). If the client
    /// cancels, times out or goes away first, this future is dropped, and the call
    /// does not start (or stops at its next wait): see `bpfman::request`.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Manager) -> bpfman::Result<T> + Send + 'static,
    ) -> Result<T, Status> {
        let m = self.manager.clone();
        let alive = bpfman::request::AliveGuard::new();
        let flag = alive.0.clone();
        let r = tokio::task::spawn_blocking(move || {
            bpfman::request::scope(flag, || {
                bpfman::request::check()?;
                f(&m)
            })
        })
        .await;
        drop(alive);
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if bpfman::manager::is_client_error(&e) {
                    tracing::info!("request refused: {e}");
                } else {
                    warn!("request failed: {e}");
                }
                Err(status(e))
            }
            Err(e) => Err(Status::internal(format!("worker failed: {e}"))),
        }
    }
}

fn program_info(p: &Program, links: &[u32], users: &[u32]) -> v1::ProgramInfo {
    v1::ProgramInfo {
        name: p.name.clone(),
        bytecode: Some(proto::bytecode_location(&p.bytecode)),
        links: links.to_vec(),
        global_data: p.global_data.clone().into_iter().collect(),
        map_owner_id: p.map_owner_id,
        map_pin_path: p.map_pin_path.clone(),
        map_used_by: users.iter().map(|u| u.to_string()).collect(),
        metadata: p.metadata.clone().into_iter().collect(),
    }
}

fn kernel_info(k: &bpfman::KernelProgram) -> v1::KernelProgramInfo {
    v1::KernelProgramInfo {
        id: k.id,
        name: k.name.clone(),
        program_type: k.program_type,
        loaded_at: k.loaded_at.clone(),
        tag: k.tag.clone(),
        gpl_compatible: k.gpl_compatible,
        map_ids: k.map_ids.clone(),
        btf_id: k.btf_id,
        bytes_xlated: k.bytes_xlated,
        jited: k.jited,
        bytes_jited: k.bytes_jited,
        bytes_memlock: k.bytes_memlock,
        verified_insns: k.verified_insns,
    }
}

fn view_info(v: &ProgramView) -> Option<v1::ProgramInfo> {
    v.program
        .as_ref()
        .map(|p| program_info(p, &v.links, &v.map_used_by))
}

fn link_info(v: LinkView) -> ext::LinkInfo {
    let LinkView {
        link,
        program_name,
        dispatcher_revision,
    } = v;
    let l = &link;
    let h = l.spec.net_hook();
    let mut details = BTreeMap::new();
    match &l.spec {
        AttachSpec::Tracepoint { tracepoint } => {
            details.insert("tracepoint".to_string(), tracepoint.clone());
        }
        AttachSpec::Kprobe {
            fn_name, offset, ..
        } => {
            details.insert("fn_name".into(), fn_name.clone());
            details.insert("offset".into(), offset.to_string());
        }
        AttachSpec::Uprobe {
            fn_name,
            offset,
            target,
            pid,
            container_pid,
        } => {
            if let Some(f) = fn_name {
                details.insert("fn_name".into(), f.clone());
            }
            details.insert("offset".into(), offset.to_string());
            details.insert("target".into(), target.clone());
            if let Some(p) = pid {
                details.insert("pid".into(), p.to_string());
            }
            if let Some(p) = container_pid {
                details.insert("container_pid".into(), p.to_string());
            }
        }
        _ => {}
    }
    if let Some(i) = l.ifindex {
        details.insert("ifindex".into(), i.to_string());
    }
    // What a uprobe really probes: the file (device and inode) that was opened.
    if let Some(p) = l.metadata.get(keys::PROBED) {
        details.insert("probed".into(), p.clone());
    }
    ext::LinkInfo {
        link_id: l.id,
        program_id: l.program_id,
        program_name,
        kind: l.spec.name().to_string(),
        target: l.spec.target(),
        iface: h.map(|h| h.iface.clone()).unwrap_or_default(),
        direction: h
            .and_then(|h| h.direction)
            .map(|d| d.as_str().to_string())
            .unwrap_or_default(),
        priority: h.map(|h| h.priority).unwrap_or(0),
        position: l.position,
        proceed_on: h.map(|h| h.proceed_on.clone()).unwrap_or_default(),
        netns: h.and_then(|h| h.netns.clone()),
        kernel_link_id: l.kernel_link_id,
        pin_path: l.pin_path.clone(),
        metadata: l.metadata.clone().into_iter().collect(),
        owner: Some(ext::Owner {
            uid: l.owner.uid,
            gid: l.owner.gid,
            pid: l.owner.pid,
        }),
        created_at: l.created_at.clone(),
        details: details.into_iter().collect(),
        dispatcher_revision,
    }
}

#[tonic::async_trait]
impl Bpfman for Service {
    async fn load(
        &self,
        request: Request<v1::LoadRequest>,
    ) -> Result<Response<v1::LoadResponse>, Status> {
        let who = self.caller(&request)?;
        let r = request.into_inner();
        let (bytecode, registry_auth) = proto::bytecode(r.bytecode).map_err(invalid)?;
        let programs = r
            .info
            .into_iter()
            .map(proto::program_spec)
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        let mut metadata: BTreeMap<String, String> = r.metadata.into_iter().collect();
        if let Some(uuid) = r.uuid {
            metadata.insert(keys::UUID.into(), uuid);
        }
        let req = LoadRequest {
            bytecode: Some(bytecode),
            programs,
            global_data: r.global_data.into_iter().collect(),
            metadata,
            map_owner_id: r.map_owner_id,
            registry_auth,
        };
        let views = self
            .run(move |m| {
                let loaded = m.load(who, req)?;
                m.views(loaded)
            })
            .await?;
        Ok(Response::new(v1::LoadResponse {
            programs: views
                .iter()
                .map(|v| v1::LoadResponseInfo {
                    info: view_info(v),
                    kernel_info: Some(kernel_info(&v.kernel)),
                })
                .collect(),
        }))
    }

    async fn unload(
        &self,
        request: Request<v1::UnloadRequest>,
    ) -> Result<Response<v1::UnloadResponse>, Status> {
        let who = self.caller(&request)?;
        let id = request.into_inner().id;
        self.run(move |m| m.unload(who, id)).await?;
        Ok(Response::new(v1::UnloadResponse {}))
    }

    async fn attach(
        &self,
        request: Request<v1::AttachRequest>,
    ) -> Result<Response<v1::AttachResponse>, Status> {
        let who = self.caller(&request)?;
        let r = request.into_inner();
        let (spec, metadata) = proto::attach_spec(
            r.attach
                .ok_or_else(|| Status::invalid_argument("attach request has no attach info"))?,
        )
        .map_err(invalid)?;
        let id = r.id;
        let link = self
            .run(move |m| m.attach_with_metadata(who, id, spec, metadata))
            .await?;
        Ok(Response::new(v1::AttachResponse { link_id: link.id }))
    }

    async fn detach(
        &self,
        request: Request<v1::DetachRequest>,
    ) -> Result<Response<v1::DetachResponse>, Status> {
        let who = self.caller(&request)?;
        let id = request.into_inner().link_id;
        self.run(move |m| m.detach(who, id)).await?;
        Ok(Response::new(v1::DetachResponse {}))
    }

    async fn list(
        &self,
        request: Request<v1::ListRequest>,
    ) -> Result<Response<v1::ListResponse>, Status> {
        let who = self.caller(&request)?;
        let r = request.into_inner();
        let filter = ListFilter {
            kernel_type: r.program_type,
            all: !r.bpfman_programs_only.unwrap_or(true),
            metadata: r.match_metadata.into_iter().collect(),
        };
        let views = self.run(move |m| m.list(who, &filter)).await?;
        Ok(Response::new(v1::ListResponse {
            results: views
                .iter()
                .map(|v| v1::list_response::ListResult {
                    info: view_info(v),
                    kernel_info: Some(kernel_info(&v.kernel)),
                })
                .collect(),
        }))
    }

    async fn pull_bytecode(
        &self,
        request: Request<v1::PullBytecodeRequest>,
    ) -> Result<Response<v1::PullBytecodeResponse>, Status> {
        let who = self.caller(&request)?;
        let image = request
            .into_inner()
            .image
            .ok_or_else(|| Status::invalid_argument("pull needs an image"))?;
        let policy = PullPolicy::from_i32(image.image_pull_policy).map_err(invalid)?;
        let creds = Credentials {
            username: image.username,
            password: image.password,
        };
        self.run(move |m| m.pull_image(who, &image.url, policy, &creds, &mut |_| {}))
            .await?;
        Ok(Response::new(v1::PullBytecodeResponse {}))
    }

    async fn get(
        &self,
        request: Request<v1::GetRequest>,
    ) -> Result<Response<v1::GetResponse>, Status> {
        let who = self.caller(&request)?;
        let id = request.into_inner().id;
        let v = self.run(move |m| m.get(who, id)).await?;
        Ok(Response::new(v1::GetResponse {
            info: view_info(&v),
            kernel_info: Some(kernel_info(&v.kernel)),
        }))
    }
}

#[tonic::async_trait]
impl BpfmanExt for Service {
    async fn list_links(
        &self,
        request: Request<ext::ListLinksRequest>,
    ) -> Result<Response<ext::ListLinksResponse>, Status> {
        let who = self.caller(&request)?;
        let program_id = request.into_inner().program_id;
        let links = self
            .run(move |m| {
                Ok(m.list_links(who, program_id)?
                    .into_iter()
                    .map(link_info)
                    .collect::<Vec<_>>())
            })
            .await?;
        Ok(Response::new(ext::ListLinksResponse { links }))
    }

    async fn get_link(
        &self,
        request: Request<ext::GetLinkRequest>,
    ) -> Result<Response<ext::LinkInfo>, Status> {
        let who = self.caller(&request)?;
        let id = request.into_inner().link_id;
        let info = self
            .run(move |m| Ok(link_info(m.get_link(who, id)?)))
            .await?;
        Ok(Response::new(info))
    }

    async fn list_program_records(
        &self,
        request: Request<ext::ListProgramRecordsRequest>,
    ) -> Result<Response<ext::ListProgramRecordsResponse>, Status> {
        let who = self.caller(&request)?;
        let programs = self
            .run(move |m| {
                Ok(m.list(who, &ListFilter::default())?
                    .into_iter()
                    .filter_map(|v| v.program)
                    .map(|p| {
                        let stats = m.run_stats(&p);
                        ext::ProgramRecord {
                            run_count: stats.map(|s| s.0),
                            run_time_ns: stats.map(|s| s.1),
                            id: p.id,
                            name: p.name,
                            kind: p.kind.as_str().to_string(),
                            owner: Some(ext::Owner {
                                uid: p.owner.uid,
                                gid: p.owner.gid,
                                pid: p.owner.pid,
                            }),
                            created_at: p.created_at,
                            pin_path: p.pin_path,
                            attach_fn: p.attach_fn,
                        }
                    })
                    .collect())
            })
            .await?;
        Ok(Response::new(ext::ListProgramRecordsResponse { programs }))
    }

    async fn system_info(
        &self,
        _request: Request<ext::SystemInfoRequest>,
    ) -> Result<Response<ext::SystemInfoResponse>, Status> {
        let m = self.manager.clone();
        let (programs, links) = self.run(|m| m.counts()).await?;
        let tables = self
            .run(|m| Ok(m.table_sizes()))
            .await?
            .into_iter()
            .map(|(k, v)| (k.to_string(), v as u64))
            .collect();
        let f = m.features();
        let p = m.paths();
        Ok(Response::new(ext::SystemInfoResponse {
            kernel_release: f.kernel_release.clone(),
            features: f
                .list
                .iter()
                .map(|x| ext::KernelFeature {
                    name: x.name.clone(),
                    supported: x.supported,
                    detail: x.detail.clone(),
                })
                .collect(),
            daemon_version: self.version.to_string(),
            runtime_dir: p.runtime_dir.display().to_string(),
            bpffs: p.bpffs.display().to_string(),
            database: p.database.display().to_string(),
            socket: p.socket.display().to_string(),
            daemon_pid: std::process::id(),
            programs,
            links,
            tables,
        }))
    }

    async fn reload(
        &self,
        request: Request<ext::ReloadRequest>,
    ) -> Result<Response<ext::ReloadResponse>, Status> {
        let who = self.caller(&request)?;
        let path = self.config_path.clone();
        let p2 = path.clone();
        let rules = self.run(move |m| m.reload_file(who, &p2)).await?;
        Ok(Response::new(ext::ReloadResponse {
            config: path.display().to_string(),
            rules,
        }))
    }

    async fn reconcile(
        &self,
        request: Request<ext::ReconcileRequest>,
    ) -> Result<Response<ext::ReconcileResponse>, Status> {
        let who = self.caller(&request)?;
        let report = self.run(move |m| m.reconcile(who)).await?;
        Ok(Response::new(ext::ReconcileResponse {
            actions: report.actions(),
        }))
    }

    type PullImageStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<ext::PullImageEvent, Status>> + Send>,
    >;

    async fn pull_image(
        &self,
        request: Request<ext::PullImageRequest>,
    ) -> Result<Response<Self::PullImageStream>, Status> {
        let who = self.caller(&request)?;
        let r = request.into_inner();
        let policy = PullPolicy::from_i32(r.image_pull_policy).map_err(invalid)?;
        let creds = Credentials {
            username: r.username,
            password: r.password,
        };
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let m = self.manager.clone();
        tokio::task::spawn_blocking(move || {
            let progress_tx = tx.clone();
            let mut last = (String::new(), u64::MAX);
            let result = m.pull_image(who, &r.url, policy, &creds, &mut |p| {
                // Only phase changes and every 64 KiB: a bar, not a flood.
                if p.phase != last.0 || p.done / 65536 != last.1 / 65536 || p.done == p.total {
                    last = (p.phase.to_string(), p.done);
                    let _ = progress_tx.try_send(Ok(ext::PullImageEvent {
                        event: Some(ext::pull_image_event::Event::Progress(ext::PullProgress {
                            phase: p.phase.to_string(),
                            done: p.done,
                            total: p.total,
                        })),
                    }));
                }
            });
            let msg = match result {
                Ok(rec) => Ok(ext::PullImageEvent {
                    event: Some(ext::pull_image_event::Event::Image(image_info(&rec))),
                }),
                Err(e) => {
                    if !bpfman::manager::is_client_error(&e) {
                        warn!("pull failed: {e}");
                    }
                    Err(status(e))
                }
            };
            let _ = tx.blocking_send(msg);
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn list_images(
        &self,
        request: Request<ext::ListImagesRequest>,
    ) -> Result<Response<ext::ListImagesResponse>, Status> {
        let who = self.caller(&request)?;
        let images = self.run(move |m| m.images(who)).await?;
        Ok(Response::new(ext::ListImagesResponse {
            images: images.iter().map(image_info).collect(),
        }))
    }

    async fn inspect_image(
        &self,
        request: Request<ext::InspectImageRequest>,
    ) -> Result<Response<ext::ImageInfo>, Status> {
        let who = self.caller(&request)?;
        let url = request.into_inner().url;
        let rec = self.run(move |m| m.image(who, &url)).await?;
        Ok(Response::new(image_info(&rec)))
    }

    async fn remove_image(
        &self,
        request: Request<ext::RemoveImageRequest>,
    ) -> Result<Response<ext::RemoveImageResponse>, Status> {
        let who = self.caller(&request)?;
        let what = request.into_inner().image;
        let gone = self.run(move |m| m.remove_image(who, &what)).await?;
        Ok(Response::new(ext::RemoveImageResponse {
            removed: gone.iter().map(image_info).collect(),
        }))
    }
}

fn image_info(r: &ImageRecord) -> ext::ImageInfo {
    ext::ImageInfo {
        reference: r.reference.clone(),
        digest: r.digest.clone(),
        manifest_digest: r.manifest_digest.clone(),
        bytecode_digest: r.bytecode_digest.clone(),
        programs: r.labels.programs.clone().into_iter().collect(),
        maps: r.labels.maps.clone().into_iter().collect(),
        size: r.size,
        signature: r.signature.clone(),
        pulled_at: r.pulled_at.clone(),
    }
}
