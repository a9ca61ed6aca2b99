//! The metadata store: one SQLite database, opened once, with a real schema, foreign
//! keys and numbered migrations. Only this module speaks SQL.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::error::{Error, Result};
use crate::model::{
    AttachSpec, Bytecode, Caller, DispatcherRecord, HookAttachment, HookKey, HookKind, Link,
    Program, ProgramKind, TcFilter,
};

/// Migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    // 1: programs and links.
    "CREATE TABLE programs (
        id            INTEGER PRIMARY KEY,            -- kernel program id
        name          TEXT    NOT NULL,
        kind          TEXT    NOT NULL,
        bytecode      TEXT    NOT NULL,               -- JSON Bytecode
        attach_fn     TEXT,
        global_data   TEXT    NOT NULL DEFAULT '{}',  -- JSON name -> bytes
        metadata      TEXT    NOT NULL DEFAULT '{}',  -- JSON name -> value
        map_owner_id  INTEGER REFERENCES programs(id) ON DELETE RESTRICT,
        map_pin_path  TEXT    NOT NULL,
        maps          TEXT    NOT NULL DEFAULT '[]',  -- JSON list of pinned map names
        pin_path      TEXT    NOT NULL UNIQUE,
        owner_uid     INTEGER NOT NULL,
        owner_gid     INTEGER NOT NULL,
        owner_pid     INTEGER NOT NULL,
        created_at    TEXT    NOT NULL,
        tag           TEXT    NOT NULL
    );
    CREATE INDEX programs_by_owner ON programs(owner_uid);
    CREATE TABLE links (
        id             INTEGER PRIMARY KEY AUTOINCREMENT, -- daemon link id, never reused
        program_id     INTEGER NOT NULL REFERENCES programs(id) ON DELETE RESTRICT,
        kind           TEXT    NOT NULL,
        spec           TEXT    NOT NULL,               -- JSON AttachSpec
        hook           TEXT,                           -- e.g. xdp/<netns>/<ifindex>
        ifindex        INTEGER,
        kernel_link_id INTEGER NOT NULL DEFAULT 0,
        pin_path       TEXT    NOT NULL DEFAULT '',    -- '' until the kernel attached
        metadata       TEXT    NOT NULL DEFAULT '{}',
        owner_uid      INTEGER NOT NULL,
        owner_gid      INTEGER NOT NULL,
        owner_pid      INTEGER NOT NULL,
        created_at     TEXT    NOT NULL,
        position       INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX links_by_program ON links(program_id);
    CREATE UNIQUE INDEX links_by_pin ON links(pin_path) WHERE pin_path != '';
    CREATE INDEX links_by_hook ON links(hook);",
    // 2: dispatchers, one per hook that runs several programs through one.
    "CREATE TABLE dispatchers (
        hook           TEXT    PRIMARY KEY,            -- store::hook_key
        kind           TEXT    NOT NULL,               -- xdp or tc
        revision       INTEGER NOT NULL,
        dispatcher_pin TEXT    NOT NULL,
        link_pin       TEXT    NOT NULL,               -- the hook's own attachment
        program_id     INTEGER NOT NULL DEFAULT 0      -- kernel id of the dispatcher
    );",
    // 3: what the ELF said about multi-buffer XDP, recorded at load (NULL: not recorded).
    "ALTER TABLE programs ADD COLUMN xdp_frags INTEGER;",
    // 4: tenants root acts on behalf of (Kubernetes namespaces); a tenant's owner uid is
    // model::TENANT_UID_BASE + id.
    "CREATE TABLE tenants (
        id    INTEGER PRIMARY KEY AUTOINCREMENT,
        name  TEXT    NOT NULL UNIQUE              -- e.g. kubernetes-namespace/team-a
    );",
];

/// The store. One connection, opened once; each call holds it only for its SQL.
pub struct Store {
    conn: Mutex<Connection>,
}

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::internal(format!("store: encode: {e}")))
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> rusqlite::Result<T> {
    serde_json::from_str(s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("{what}: {e}").into(),
        )
    })
}

/// Global data is stored as name -> hex so the JSON stays readable.
fn hex_map(m: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), hex::encode(v))).collect()
}

fn unhex_map(m: BTreeMap<String, String>) -> BTreeMap<String, Vec<u8>> {
    // Written by hex_map above; a value that is not hex (a hand-edited store) reads as
    // empty rather than failing every read of the program.
    m.into_iter()
        .map(|(k, v)| (k, hex::decode(v).unwrap_or_default()))
        .collect()
}

const PROGRAM_COLS: &str = "id, name, kind, bytecode, attach_fn, global_data, metadata, \
    map_owner_id, map_pin_path, maps, pin_path, owner_uid, owner_gid, owner_pid, created_at, tag, \
    xdp_frags";

const LINK_COLS: &str = "id, program_id, spec, ifindex, kernel_link_id, pin_path, metadata, \
    owner_uid, owner_gid, owner_pid, created_at, position, hook";

fn program_from_row(r: &Row<'_>) -> rusqlite::Result<Program> {
    let kind: String = r.get(2)?;
    Ok(Program {
        id: r.get(0)?,
        name: r.get(1)?,
        kind: kind.parse::<ProgramKind>().map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(
                2,
                rusqlite::types::Type::Text,
                e.to_string().into(),
            )
        })?,
        bytecode: from_json::<Bytecode>(&r.get::<_, String>(3)?, "bytecode")?,
        attach_fn: r.get(4)?,
        global_data: unhex_map(from_json(&r.get::<_, String>(5)?, "global_data")?),
        metadata: from_json(&r.get::<_, String>(6)?, "metadata")?,
        map_owner_id: r.get(7)?,
        map_pin_path: r.get(8)?,
        maps: from_json(&r.get::<_, String>(9)?, "maps")?,
        pin_path: r.get(10)?,
        owner: Caller {
            uid: r.get(11)?,
            gid: r.get(12)?,
            pid: r.get(13)?,
        },
        created_at: r.get(14)?,
        tag: r.get(15)?,
        xdp_frags: r.get(16)?,
    })
}

fn bad_column(i: usize, what: &str, v: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        i,
        rusqlite::types::Type::Text,
        format!("not a {what}: '{v}'").into(),
    )
}

fn hook_from_column(i: usize, v: Option<String>) -> rusqlite::Result<Option<HookKey>> {
    v.map(|s| HookKey::decode(&s).ok_or_else(|| bad_column(i, "hook key", &s)))
        .transpose()
}

/// The dispatcher table's `link_pin`: a bpffs path, or `netlink:<prio>:<handle>` for a
/// classic TC filter. This and its decoding below are the only places that know it.
fn encode_attachment(a: &HookAttachment) -> String {
    match a {
        HookAttachment::Link(p) => p.display().to_string(),
        HookAttachment::TcFilter(f) => format!("netlink:{}:{}", f.priority, f.handle),
    }
}

fn decode_attachment(s: &str) -> Option<HookAttachment> {
    match s.strip_prefix("netlink:") {
        Some(rest) => {
            let (p, h) = rest.split_once(':')?;
            Some(HookAttachment::TcFilter(TcFilter {
                priority: p.parse().ok()?,
                handle: h.parse().ok()?,
            }))
        }
        None if !s.is_empty() => Some(HookAttachment::Link(s.into())),
        None => None,
    }
}

fn dispatcher_from_row(r: &Row<'_>) -> rusqlite::Result<DispatcherRecord> {
    let hook: String = r.get(0)?;
    let kind: String = r.get(1)?;
    let pin: String = r.get(3)?;
    let link: String = r.get(4)?;
    let program_id: u32 = r.get(5)?;
    Ok(DispatcherRecord {
        hook: HookKey::decode(&hook).ok_or_else(|| bad_column(0, "hook key", &hook))?,
        kind: HookKind::parse(&kind).ok_or_else(|| bad_column(1, "hook kind", &kind))?,
        revision: r.get(2)?,
        // '' records a program attached to the hook directly.
        dispatcher_pin: (!pin.is_empty()).then(|| pin.into()),
        attachment: decode_attachment(&link)
            .ok_or_else(|| bad_column(4, "hook attachment", &link))?,
        program_id: (program_id != 0).then_some(program_id),
    })
}

fn link_from_row(r: &Row<'_>) -> rusqlite::Result<Link> {
    Ok(Link {
        id: r.get(0)?,
        program_id: r.get(1)?,
        spec: from_json::<AttachSpec>(&r.get::<_, String>(2)?, "spec")?,
        ifindex: r.get(3)?,
        kernel_link_id: r.get(4)?,
        pin_path: r.get(5)?,
        metadata: from_json(&r.get::<_, String>(6)?, "metadata")?,
        owner: Caller {
            uid: r.get(7)?,
            gid: r.get(8)?,
            pid: r.get(9)?,
        },
        created_at: r.get(10)?,
        position: r.get(11)?,
        hook: hook_from_column(12, r.get(12)?)?,
    })
}

impl Store {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)
            .map_err(|e| Error::internal(format!("opening store {}: {e}", path.display())))?;
        Self::init(conn)
    }

    /// An in-memory store, for unit tests.
    #[cfg(test)]
    pub fn in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self> {
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version as usize > MIGRATIONS.len() {
            return Err(Error::internal(format!(
                "store schema version {version} is newer than this bpfman knows ({}); \
                 run a newer bpfman or remove the store",
                MIGRATIONS.len()
            )));
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(m)
                .map_err(|e| Error::internal(format!("store migration {}: {e}", i + 1)))?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let mut c = self
            .conn
            .lock()
            .map_err(|_| Error::internal("store lock poisoned"))?;
        f(&mut c)
    }

    /// Records programs loaded together, all or none.
    pub fn insert_programs(&self, programs: &[Program]) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            for p in programs {
                tx.execute(
                    &format!(
                        "INSERT INTO programs ({PROGRAM_COLS}) VALUES \
                         (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17)"
                    ),
                    params![
                        p.id,
                        p.name,
                        p.kind.as_str(),
                        json(&p.bytecode)?,
                        p.attach_fn,
                        json(&hex_map(&p.global_data))?,
                        json(&p.metadata)?,
                        p.map_owner_id,
                        p.map_pin_path,
                        json(&p.maps)?,
                        p.pin_path,
                        p.owner.uid,
                        p.owner.gid,
                        p.owner.pid,
                        p.created_at,
                        p.tag,
                        p.xdp_frags,
                    ],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    pub fn program(&self, id: u32) -> Result<Option<Program>> {
        self.with(|c| {
            Ok(c.query_row(
                &format!("SELECT {PROGRAM_COLS} FROM programs WHERE id = ?1"),
                [id],
                program_from_row,
            )
            .optional()?)
        })
    }

    pub fn programs(&self) -> Result<Vec<Program>> {
        self.with(|c| {
            let mut st = c.prepare(&format!("SELECT {PROGRAM_COLS} FROM programs ORDER BY id"))?;
            let rows = st.query_map([], program_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Programs that use `owner_id`'s maps.
    pub fn map_users(&self, owner_id: u32) -> Result<Vec<u32>> {
        self.with(|c| {
            let mut st =
                c.prepare("SELECT id FROM programs WHERE map_owner_id = ?1 ORDER BY id")?;
            let rows = st.query_map([owner_id], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Programs whose maps are pinned in `dir` (peers loaded together share one).
    pub fn programs_with_map_dir(&self, dir: &str) -> Result<Vec<u32>> {
        self.with(|c| {
            let mut st =
                c.prepare("SELECT id FROM programs WHERE map_pin_path = ?1 ORDER BY id")?;
            let rows = st.query_map([dir], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    pub fn delete_program(&self, id: u32) -> Result<()> {
        self.with(|c| {
            c.execute("DELETE FROM programs WHERE id = ?1", [id])?;
            Ok(())
        })
    }

    /// Records a link and returns its new id (never one used before in this store).
    pub fn insert_link(&self, l: &Link) -> Result<u32> {
        self.with(|c| {
            c.execute(
                "INSERT INTO links (program_id, kind, spec, hook, ifindex, kernel_link_id, \
                 pin_path, metadata, owner_uid, owner_gid, owner_pid, created_at, position) \
                 VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13)",
                params![
                    l.program_id,
                    l.spec.name(),
                    json(&l.spec)?,
                    l.hook.map(|h| h.encode()),
                    l.ifindex,
                    l.kernel_link_id,
                    l.pin_path,
                    json(&l.metadata)?,
                    l.owner.uid,
                    l.owner.gid,
                    l.owner.pid,
                    l.created_at,
                    l.position,
                ],
            )?;
            let id = c.last_insert_rowid();
            u32::try_from(id).map_err(|_| Error::internal(format!("link id {id} out of range")))
        })
    }

    /// Fills in what is known only after the kernel attached: pin path and kernel link id.
    pub fn complete_link(&self, id: u32, pin_path: &str, kernel_link_id: u32) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE links SET pin_path = ?2, kernel_link_id = ?3 WHERE id = ?1",
                params![id, pin_path, kernel_link_id],
            )?;
            Ok(())
        })
    }

    pub fn set_position(&self, id: u32, position: i32) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE links SET position = ?2 WHERE id = ?1",
                params![id, position],
            )?;
            Ok(())
        })
    }

    pub fn link(&self, id: u32) -> Result<Option<Link>> {
        self.with(|c| {
            Ok(c.query_row(
                &format!("SELECT {LINK_COLS} FROM links WHERE id = ?1"),
                [id],
                link_from_row,
            )
            .optional()?)
        })
    }

    pub fn links(&self, program_id: Option<u32>) -> Result<Vec<Link>> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {LINK_COLS} FROM links WHERE (?1 IS NULL OR program_id = ?1) ORDER BY id"
            ))?;
            let rows = st.query_map([program_id], link_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Links on one hook.
    pub fn links_on_hook(&self, hook: &HookKey) -> Result<Vec<Link>> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {LINK_COLS} FROM links WHERE hook = ?1 ORDER BY id"
            ))?;
            let rows = st.query_map([hook.encode()], link_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    pub fn delete_link(&self, id: u32) -> Result<()> {
        self.with(|c| {
            c.execute("DELETE FROM links WHERE id = ?1", [id])?;
            Ok(())
        })
    }

    pub fn dispatcher(&self, hook: &HookKey) -> Result<Option<DispatcherRecord>> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT hook, kind, revision, dispatcher_pin, link_pin, program_id \
                 FROM dispatchers WHERE hook = ?1",
                [hook.encode()],
                dispatcher_from_row,
            )
            .optional()?)
        })
    }

    pub fn dispatchers(&self) -> Result<Vec<DispatcherRecord>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT hook, kind, revision, dispatcher_pin, link_pin, program_id \
                 FROM dispatchers ORDER BY hook",
            )?;
            let rows = st.query_map([], dispatcher_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    pub fn put_dispatcher(&self, d: &DispatcherRecord) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO dispatchers (hook, kind, revision, dispatcher_pin, link_pin, program_id) \
                 VALUES (?1,?2,?3,?4,?5,?6) ON CONFLICT(hook) DO UPDATE SET kind = ?2, \
                 revision = ?3, dispatcher_pin = ?4, link_pin = ?5, program_id = ?6",
                params![
                    d.hook.encode(),
                    d.kind.as_str(),
                    d.revision,
                    d.dispatcher_pin
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    encode_attachment(&d.attachment),
                    d.program_id.unwrap_or(0)
                ],
            )?;
            Ok(())
        })
    }

    pub fn delete_dispatcher(&self, hook: &HookKey) -> Result<()> {
        self.with(|c| {
            c.execute("DELETE FROM dispatchers WHERE hook = ?1", [hook.encode()])?;
            Ok(())
        })
    }

    /// The id of tenant `name`, made on first use (ids are never reused).
    pub fn tenant_id(&self, name: &str) -> Result<u32> {
        self.with(|c| {
            c.execute("INSERT OR IGNORE INTO tenants (name) VALUES (?1)", [name])?;
            Ok(
                c.query_row("SELECT id FROM tenants WHERE name = ?1", [name], |r| {
                    r.get(0)
                })?,
            )
        })
    }

    /// The name of tenant `id`.
    pub fn tenant_name(&self, id: u32) -> Result<Option<String>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT name FROM tenants WHERE id = ?1")?;
            let mut rows = st.query([id])?;
            Ok(match rows.next()? {
                Some(r) => Some(r.get(0)?),
                None => None,
            })
        })
    }

    pub fn count_owned_programs(&self, uid: u32) -> Result<u32> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT count(*) FROM programs WHERE owner_uid = ?1",
                [uid],
                |r| r.get(0),
            )?)
        })
    }

    pub fn count_owned_links(&self, uid: u32) -> Result<u32> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT count(*) FROM links WHERE owner_uid = ?1",
                [uid],
                |r| r.get(0),
            )?)
        })
    }

    pub fn counts(&self) -> Result<(u64, u64)> {
        self.with(|c| {
            let p: i64 = c.query_row("SELECT count(*) FROM programs", [], |r| r.get(0))?;
            let l: i64 = c.query_row("SELECT count(*) FROM links", [], |r| r.get(0))?;
            Ok((p as u64, l as u64))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NetHook;

    fn prog(id: u32, owner: Option<u32>) -> Program {
        Program {
            id,
            name: format!("p{id}"),
            kind: ProgramKind::Xdp,
            bytecode: Bytecode::File("/x.o".into()),
            attach_fn: None,
            global_data: BTreeMap::from([("g".to_string(), vec![0xab, 0x01])]),
            metadata: BTreeMap::from([("k".to_string(), "v".to_string())]),
            map_owner_id: owner,
            map_pin_path: format!("/fs/maps/{}", owner.unwrap_or(id)),
            maps: vec!["m".into()],
            pin_path: format!("/fs/prog_{id}"),
            owner: Caller {
                uid: 1000,
                gid: 1000,
                pid: 42,
            },
            created_at: "2026-01-01T00:00:00Z".into(),
            tag: "00".into(),
            xdp_frags: Some(false),
        }
    }

    fn link(program_id: u32) -> Link {
        Link {
            id: 0,
            program_id,
            spec: AttachSpec::Xdp(NetHook {
                iface: "veth0".into(),
                priority: 50,
                proceed_on: vec![2],
                netns: None,
                direction: None,
            }),
            ifindex: Some(3),
            kernel_link_id: 0,
            pin_path: String::new(),
            metadata: BTreeMap::new(),
            owner: Caller::daemon(),
            created_at: "t".into(),
            position: 0,
            hook: HookKey::decode("xdp/1/3"),
        }
    }

    #[test]
    fn hook_attachments_have_one_encoding() {
        let f = HookAttachment::TcFilter(TcFilter {
            priority: 50,
            handle: 0x8000_0001,
        });
        assert_eq!(decode_attachment(&encode_attachment(&f)), Some(f));
        let l = HookAttachment::Link("/run/bpfman/fs/dispatchers/xdp_1_3/link".into());
        assert_eq!(decode_attachment(&encode_attachment(&l)), Some(l));
        assert_eq!(decode_attachment("netlink:x:1"), None);
        assert_eq!(decode_attachment(""), None);
    }

    #[test]
    fn dispatcher_records_round_trip() -> Result<()> {
        let s = Store::in_memory()?;
        let hook = HookKey::decode("tc/1/3/egress").ok_or_else(|| Error::internal("key"))?;
        let direct = DispatcherRecord {
            hook,
            kind: HookKind::Tc,
            revision: 0,
            dispatcher_pin: None,
            attachment: HookAttachment::TcFilter(TcFilter {
                priority: 50,
                handle: 0xb9f,
            }),
            program_id: None,
        };
        s.put_dispatcher(&direct)?;
        assert_eq!(s.dispatcher(&hook)?, Some(direct.clone()));
        let full = DispatcherRecord {
            revision: 3,
            dispatcher_pin: Some("/fs/dispatchers/tc_1_3_egress/3/dispatcher".into()),
            program_id: Some(812),
            ..direct
        };
        s.put_dispatcher(&full)?;
        assert_eq!(s.dispatchers()?, vec![full]);
        s.delete_dispatcher(&hook)?;
        assert_eq!(s.dispatcher(&hook)?, None);
        Ok(())
    }

    #[test]
    fn programs_round_trip() -> Result<()> {
        let s = Store::in_memory()?;
        s.insert_programs(&[prog(7, None), prog(8, Some(7))])?;
        let p = s.program(8)?.ok_or_else(|| Error::internal("missing"))?;
        assert_eq!(p, prog(8, Some(7)));
        assert_eq!(s.map_users(7)?, vec![8]);
        assert_eq!(s.programs()?.len(), 2);
        Ok(())
    }

    #[test]
    fn map_owner_cannot_be_deleted_while_used() -> Result<()> {
        let s = Store::in_memory()?;
        s.insert_programs(&[prog(7, None), prog(8, Some(7))])?;
        assert!(s.delete_program(7).is_err());
        s.delete_program(8)?;
        s.delete_program(7)?;
        Ok(())
    }

    #[test]
    fn link_ids_are_never_reused() -> Result<()> {
        let s = Store::in_memory()?;
        s.insert_programs(&[prog(7, None)])?;
        let a = s.insert_link(&link(7))?;
        s.complete_link(a, "/fs/links/1", 9)?;
        s.delete_link(a)?;
        let b = s.insert_link(&link(7))?;
        assert!(b > a, "link id {b} reused after {a}");
        assert_eq!(
            s.links_on_hook(&HookKey::decode("xdp/1/3").ok_or_else(|| Error::internal("key"))?)?
                .len(),
            1
        );
        // A program with links cannot be deleted.
        assert!(s.delete_program(7).is_err());
        Ok(())
    }

    #[test]
    fn partial_batch_is_rolled_back() -> Result<()> {
        let s = Store::in_memory()?;
        // Duplicate pin path makes the second insert fail: nothing lands.
        let mut b = prog(8, None);
        b.pin_path = "/fs/prog_7".into();
        assert!(s.insert_programs(&[prog(7, None), b]).is_err());
        assert!(s.programs()?.is_empty());
        Ok(())
    }

    #[test]
    fn reopen_keeps_data_and_schema() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::internal(e.to_string()))?;
        let path = dir.path().join("store.db");
        {
            let s = Store::open(&path)?;
            s.insert_programs(&[prog(7, None)])?;
        }
        let s = Store::open(&path)?;
        assert_eq!(s.programs()?.len(), 1);
        Ok(())
    }
}
