//! `bpfman image ...`. Pull, list, inspect and rm go through the daemon's API (its
//! cache); build, push, sign, verify and generate-key-pair are local tooling that needs
//! no privilege and no daemon, built on the same library code the daemon uses.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use bpfman::image::builder::{BuildInput, build};
use bpfman::image::format::Labels;
use bpfman::image::layout::Layout;
use bpfman::image::registry::{Credentials, RegistryOptions, parse_reference};
use bpfman::image::{LoadedKey, SigCheck, push, sign, sign_remote, verify_remote};
use bpfman_client::Client;
use bpfman_client::ext_proto as ext;
use bpfman_types::{ProgramKind, PullPolicy};
use serde_json::{Value, json};

use crate::args::{ImageCommand, Output, RegistryArgs};

fn lib(e: bpfman::Error) -> anyhow::Error {
    anyhow!("{e}")
}

/// The local layout: --layout, else $XDG_DATA_HOME/bpfman/images, else ~/.local/share/...
fn layout_dir(given: Option<PathBuf>) -> PathBuf {
    if let Some(p) = given {
        return p;
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("bpfman").join("images");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".local/share/bpfman/images")
}

fn registry_options(
    reference: &str,
    r: &RegistryArgs,
) -> anyhow::Result<(Credentials, RegistryOptions)> {
    let creds = match &r.registry_auth {
        Some(a) => Credentials::from_base64(a).map_err(lib)?,
        None => Credentials::default(),
    };
    let docker_config = std::env::var_os("DOCKER_CONFIG")
        .map(|d| PathBuf::from(d).join("config.json"))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json")));
    let mut insecure = Vec::new();
    if r.insecure {
        insecure.push(
            parse_reference(reference)
                .map_err(lib)?
                .resolve_registry()
                .to_string(),
        );
    }
    Ok((
        creds,
        RegistryOptions {
            insecure,
            auth_file: docker_config,
        },
    ))
}

fn password() -> Vec<u8> {
    std::env::var("COSIGN_PASSWORD")
        .unwrap_or_default()
        .into_bytes()
}

pub fn image_json(i: &ext::ImageInfo) -> Value {
    json!({
        "reference": i.reference,
        "digest": i.digest,
        "manifest_digest": i.manifest_digest,
        "bytecode_digest": i.bytecode_digest,
        "programs": i.programs.iter().collect::<BTreeMap<_, _>>(),
        "maps": i.maps.iter().collect::<BTreeMap<_, _>>(),
        "size": i.size,
        "signature": i.signature,
        "pulled_at": i.pulled_at,
    })
}

fn short(d: &str) -> String {
    d.trim_start_matches("sha256:").chars().take(12).collect()
}

fn image_detail(i: &ext::ImageInfo) -> String {
    let mut s = format!(
        "Reference:        {}\nDigest:           {}\nManifest digest:  {}\nBytecode digest:  {}\n\
         Size:             {} bytes\nSignature:        {}\nPulled at:        {}\nPrograms:\n",
        i.reference,
        i.digest,
        i.manifest_digest,
        i.bytecode_digest,
        i.size,
        i.signature,
        i.pulled_at
    );
    for (f, t) in i.programs.iter().collect::<BTreeMap<_, _>>() {
        s.push_str(&format!("  {t}:{f}\n"));
    }
    s.push_str("Maps:\n");
    for (m, t) in i.maps.iter().collect::<BTreeMap<_, _>>() {
        s.push_str(&format!("  {m} ({t})\n"));
    }
    s.trim_end().to_string()
}

fn images_table(images: &[ext::ImageInfo]) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    t.set_header(vec![
        "REFERENCE",
        "DIGEST",
        "PROGRAMS",
        "SIGNATURE",
        "PULLED",
    ]);
    for i in images {
        let progs: Vec<String> = i
            .programs
            .iter()
            .collect::<BTreeMap<_, _>>()
            .iter()
            .map(|(f, t)| format!("{t}:{f}"))
            .collect();
        t.add_row(vec![
            i.reference.clone(),
            short(&i.digest),
            progs.join(" "),
            i.signature.split(':').next().unwrap_or("").to_string(),
            i.pulled_at.clone(),
        ]);
    }
    t.to_string()
}

/// Pulls through the daemon, drawing a progress bar on a terminal. Returns the image.
pub async fn pull_with_progress(
    c: &mut Client,
    req: ext::PullImageRequest,
) -> anyhow::Result<ext::ImageInfo> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>10} [{bar:30}] {bytes}/{total_bytes}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(req.url.clone());
    let r = c
        .pull_image(req, |p| {
            bar.set_message(p.phase.clone());
            bar.set_length(p.total);
            bar.set_position(p.done);
        })
        .await;
    match r {
        Ok(i) => {
            bar.finish_and_clear();
            Ok(i)
        }
        Err(e) => {
            bar.abandon();
            Err(e.into())
        }
    }
}

fn pull_policy_number(p: &str) -> anyhow::Result<i32> {
    Ok(PullPolicy::parse(p)?.as_i32())
}

pub fn parse_labels(programs: &[String], maps: &[String]) -> anyhow::Result<Option<Labels>> {
    if programs.is_empty() && maps.is_empty() {
        return Ok(None);
    }
    let mut l = Labels::default();
    for p in programs {
        let (t, f) = p
            .split_once(':')
            .ok_or_else(|| anyhow!("malformed --programs '{p}': expected TYPE:FUNCTION"))?;
        let kind = match t.parse::<ProgramKind>() {
            Ok(k) if !f.is_empty() => k,
            _ => bail!("malformed --programs '{p}': expected TYPE:FUNCTION with a known type"),
        };
        l.programs.insert(f.to_string(), kind.as_str().to_string());
    }
    for m in maps {
        let (n, t) = m
            .split_once(':')
            .ok_or_else(|| anyhow!("malformed --maps '{m}': expected NAME:TYPE"))?;
        l.maps.insert(n.to_string(), t.to_string());
    }
    Ok(Some(l))
}

// Long on purpose: one arm per `bpfman image` subcommand, each a few calls.
pub async fn run(
    cmd: ImageCommand,
    socket: &std::path::Path,
    out: Output,
    emit: impl Fn(Output, &Value, &dyn Fn() -> String) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::Pull {
            image,
            image_url,
            pull_policy,
            registry_auth,
        } => {
            let url = image.or(image_url).unwrap_or_default();
            let policy = pull_policy_number(&pull_policy)?;
            let (username, password) = match registry_auth {
                Some(a) => {
                    let (u, p) = bpfman_client::registry_auth_from_base64(&a)?;
                    (Some(u), Some(p))
                }
                None => (None, None),
            };
            let mut c = crate::client::connect(socket).await?;
            let i = pull_with_progress(
                &mut c,
                ext::PullImageRequest {
                    url,
                    image_pull_policy: policy,
                    username,
                    password,
                },
            )
            .await?;
            emit(out, &image_json(&i), &|| image_detail(&i))
        }
        ImageCommand::List => {
            let images = crate::client::connect(socket).await?.list_images().await?;
            let v = Value::Array(images.iter().map(image_json).collect());
            emit(out, &v, &|| images_table(&images))
        }
        ImageCommand::Inspect { image } => {
            let i = crate::client::connect(socket)
                .await?
                .inspect_image(&image)
                .await?;
            emit(out, &image_json(&i), &|| image_detail(&i))
        }
        ImageCommand::Rm { image } => {
            let removed = crate::client::connect(socket)
                .await?
                .remove_image(&image)
                .await?;
            let v = Value::Array(removed.iter().map(image_json).collect());
            emit(out, &v, &|| {
                removed
                    .iter()
                    .map(|i| format!("removed {} ({})", i.reference, short(&i.digest)))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        ImageCommand::Build {
            bytecode,
            bytecode_for,
            tag,
            programs,
            maps,
            layout,
        } => {
            let labels = parse_labels(&programs, &maps)?;
            let mut inputs = Vec::new();
            let read = |p: &PathBuf| {
                std::fs::read(p).with_context(|| format!("reading bytecode {}", p.display()))
            };
            let name_of = |p: &PathBuf| {
                p.file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_else(|| "bytecode.o".into())
            };
            if let Some(b) = &bytecode {
                inputs.push(BuildInput {
                    arch: None,
                    file_name: name_of(b),
                    bytes: read(b)?,
                });
            }
            for bf in &bytecode_for {
                let (arch, file) = bf.split_once('=').ok_or_else(|| {
                    anyhow!("malformed --bytecode-for '{bf}': expected ARCH=FILE")
                })?;
                let file = PathBuf::from(file);
                inputs.push(BuildInput {
                    arch: Some(arch.to_string()),
                    file_name: name_of(&file),
                    bytes: read(&file)?,
                });
            }
            if bytecode.is_some() && !bytecode_for.is_empty() {
                // --bytecode joins the index as this host's architecture.
                inputs[0].arch = Some(bpfman::image::format::host_arch().to_string());
            }
            let dir = layout_dir(layout);
            let l = Layout::open(&dir).map_err(lib)?;
            let (_, name) = bpfman::image::ImageService::normalise(&tag).map_err(lib)?;
            let b = build(&l, &name, &inputs, labels.as_ref()).map_err(lib)?;
            let v = json!({
                "reference": name,
                "digest": b.digest,
                "media_type": b.media_type,
                "platforms": b.platforms,
                "programs": b.labels.programs,
                "maps": b.labels.maps,
                "layout": dir.display().to_string(),
            });
            emit(out, &v, &|| {
                format!(
                    "built {name} {} ({}) in {}\nprograms: {}\nmaps: {}",
                    b.digest,
                    b.platforms.join(", "),
                    dir.display(),
                    b.labels
                        .programs
                        .iter()
                        .map(|(f, t)| format!("{t}:{f}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                    b.labels.maps.keys().cloned().collect::<Vec<_>>().join(" ")
                )
            })
        }
        ImageCommand::Push {
            image,
            to,
            registry,
            layout,
        } => {
            let target = to.clone().unwrap_or_else(|| image.clone());
            let (creds, opts) = registry_options(&target, &registry)?;
            let l = Layout::open(&layout_dir(layout)).map_err(lib)?;
            let digest = push(&l, &image, &target, &creds, &opts)
                .await
                .map_err(lib)?;
            emit(out, &json!({"pushed": target, "digest": digest}), &|| {
                format!("pushed {target} {digest}")
            })
        }
        ImageCommand::Sign {
            key,
            image,
            registry,
        } => {
            let pem = std::fs::read_to_string(&key)
                .with_context(|| format!("reading key {}", key.display()))?;
            let sk = sign::parse_private_key(&pem, &password(), &key.display().to_string())
                .map_err(lib)?;
            let (creds, opts) = registry_options(&image, &registry)?;
            let digest = sign_remote(&image, &sk, &creds, &opts).await.map_err(lib)?;
            emit(out, &json!({"signed": image, "digest": digest}), &|| {
                format!("signed {image} ({digest})")
            })
        }
        ImageCommand::Verify {
            key,
            image,
            registry,
        } => {
            let mut keys = Vec::new();
            for k in &key {
                let pem = std::fs::read_to_string(k)
                    .with_context(|| format!("reading key {}", k.display()))?;
                let origin = k.display().to_string();
                let vk = sign::parse_public_key(&pem, &origin).map_err(lib)?;
                keys.push(LoadedKey {
                    prefix: String::new(),
                    fingerprint: sign::fingerprint(&vk),
                    key: vk,
                    origin,
                });
            }
            let (creds, opts) = registry_options(&image, &registry)?;
            let (digest, check) = verify_remote(&image, &keys, &creds, &opts)
                .await
                .map_err(lib)?;
            match check {
                SigCheck::Verified {
                    fingerprint,
                    origin,
                } => emit(
                    out,
                    &json!({"image": image, "digest": digest, "verified": true, "key": origin, "fingerprint": fingerprint}),
                    &|| {
                        format!(
                            "verified {image} ({digest}): signed by key {fingerprint} ({origin})"
                        )
                    },
                ),
                SigCheck::Unsigned => bail!("{image} ({digest}) has no signatures"),
                SigCheck::Untrusted { signatures, reason } => bail!(
                    "{image} ({digest}) has {signatures} signature(s), none by the given key(s): {reason}"
                ),
            }
        }
        ImageCommand::GenerateKeyPair { output_key_prefix } => {
            let (private, public) = sign::generate_key_pair(&password()).map_err(lib)?;
            let kp = PathBuf::from(format!("{output_key_prefix}.key"));
            let pp = PathBuf::from(format!("{output_key_prefix}.pub"));
            for p in [&kp, &pp] {
                if p.exists() {
                    bail!(
                        "{} exists; remove it or choose --output-key-prefix",
                        p.display()
                    );
                }
            }
            {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&kp)
                    .with_context(|| format!("creating {}", kp.display()))?;
                f.write_all(private.as_bytes())?;
            }
            std::fs::write(&pp, public).with_context(|| format!("writing {}", pp.display()))?;
            emit(
                out,
                &json!({"private_key": kp.display().to_string(), "public_key": pp.display().to_string()}),
                &|| {
                    format!(
                        "Private key written to {}\nPublic key written to {}",
                        kp.display(),
                        pp.display()
                    )
                },
            )
        }
    }
}
