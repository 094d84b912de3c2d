//! The libvirt backend (feature `libvirt`): the same VMs through a libvirt
//! URI, local (`qemu:///system`) or remote (`qemu+ssh://host/system`).
//!
//! Each VM is a persistent domain named like the QEMU backend's process
//! (`openfactory-vm-<id>`), with its volumes in one directory pool: a copy of
//! the build's ISO (uploaded, so it works remotely too, and libvirt may
//! relabel the copy without touching the build), an optional qcow2 disk and
//! the serial log. libvirt's calls block, so each runs on tokio's blocking
//! pool with its own connection: a restarted daemon costs nothing.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::ErrorNumber;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::stream::Stream;

use crate::accel::{AccelChooser, AccelSetting};
use crate::agent::{AgentError, reply_value};
use crate::backend::{StopOutcome, VmBackend, VmState};
use crate::domain::{
    DomainFiles, disk_volume, domain_name, domain_xml, iso_volume, pool_xml, serial_volume,
    vnc_listen, volume_xml,
};
use crate::error::VmError;
use crate::records::{Records, VmRecord, check_id, unix_now};
use crate::spec::VmSpec;

/// Where the backend's domains and volumes live.
#[derive(Debug, Clone)]
pub struct LibvirtConfig {
    pub uri: String,
    /// A directory pool, created (and set to autostart) when missing.
    pub pool: String,
    pub pool_path: String,
}

impl Default for LibvirtConfig {
    fn default() -> Self {
        LibvirtConfig {
            uri: "qemu:///system".into(),
            pool: "openfactory".into(),
            pool_path: "/var/lib/libvirt/images/openfactory".into(),
        }
    }
}

/// Is the URI's daemon on this machine (`driver:///…`, no host part)?
pub fn is_local(uri: &str) -> bool {
    uri.split_once("://")
        .is_some_and(|(_, rest)| rest.starts_with('/'))
}

pub struct LibvirtBackend {
    config: Arc<LibvirtConfig>,
    records: Records,
    accel: AccelChooser,
    local: bool,
}

fn libvirt_error(e: virt::error::Error) -> VmError {
    VmError::Libvirt(e.message().to_owned())
}

fn missing(e: &virt::error::Error) -> bool {
    matches!(
        e.code(),
        ErrorNumber::NoDomain | ErrorNumber::NoStorageVolume | ErrorNumber::NoStoragePool
    )
}

/// The pool, defined, built and started when it is not there yet.
fn pool(conn: &Connect, config: &LibvirtConfig) -> Result<StoragePool, VmError> {
    let pool = match StoragePool::lookup_by_name(conn, &config.pool) {
        Ok(pool) => pool,
        Err(e) if missing(&e) => {
            let pool = StoragePool::define_xml(conn, &pool_xml(&config.pool, &config.pool_path), 0)
                .map_err(libvirt_error)?;
            pool.build(0).map_err(libvirt_error)?;
            pool.set_autostart(true).map_err(libvirt_error)?;
            pool
        }
        Err(e) => return Err(libvirt_error(e)),
    };
    if !pool.is_active().map_err(libvirt_error)? {
        pool.create(0).map_err(libvirt_error)?;
    }
    Ok(pool)
}

fn volume(pool: &StoragePool, name: &str) -> Result<Option<StorageVol>, VmError> {
    match StorageVol::lookup_by_name(pool, name) {
        Ok(vol) => Ok(Some(vol)),
        Err(e) if missing(&e) => Ok(None),
        Err(e) => Err(libvirt_error(e)),
    }
}

/// A fresh volume (any old one of that name goes first).
fn new_volume(
    pool: &StoragePool,
    name: &str,
    bytes: u64,
    format: &str,
) -> Result<StorageVol, VmError> {
    if let Some(old) = volume(pool, name)? {
        old.delete(0).map_err(libvirt_error)?;
    }
    StorageVol::create_xml(pool, &volume_xml(name, bytes, format), 0).map_err(libvirt_error)
}

/// Copy a local file into a new volume over a libvirt stream.
fn upload(conn: &Connect, pool: &StoragePool, name: &str, file: &Path) -> Result<String, VmError> {
    let mut source = std::fs::File::open(file)?;
    let bytes = source.metadata()?.len();
    let vol = new_volume(pool, name, bytes, "raw")?;
    let stream = Stream::new(conn, 0).map_err(libvirt_error)?;
    vol.upload(&stream, 0, bytes, 0).map_err(libvirt_error)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = source.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let mut sent = 0;
        while sent < n {
            sent += stream.send(&buf[sent..n]).map_err(libvirt_error)?;
        }
    }
    stream.finish().map_err(libvirt_error)?;
    vol.get_path().map_err(libvirt_error)
}

/// A volume's whole content, over a libvirt stream.
fn download(conn: &Connect, vol: &StorageVol) -> Result<Vec<u8>, VmError> {
    let stream = Stream::new(conn, 0).map_err(libvirt_error)?;
    vol.download(&stream, 0, 0, 0).map_err(libvirt_error)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = stream.recv(&mut buf).map_err(libvirt_error)?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    stream.finish().map_err(libvirt_error)?;
    Ok(out)
}

fn domain(conn: &Connect, id: &str) -> Result<Option<Domain>, VmError> {
    match Domain::lookup_by_name(conn, &domain_name(id)) {
        Ok(dom) => Ok(Some(dom)),
        Err(e) if missing(&e) => Ok(None),
        Err(e) => Err(libvirt_error(e)),
    }
}

/// A live domain's state in a word; `None` when it is not running.
fn state_word(state: virt_sys::virDomainState) -> Option<&'static str> {
    Some(match state {
        virt_sys::VIR_DOMAIN_RUNNING => "running",
        virt_sys::VIR_DOMAIN_BLOCKED => "blocked",
        virt_sys::VIR_DOMAIN_PAUSED => "paused",
        virt_sys::VIR_DOMAIN_SHUTDOWN => "shutting-down",
        virt_sys::VIR_DOMAIN_PMSUSPENDED => "suspended",
        _ => return None,
    })
}

fn active(dom: &Domain) -> Result<bool, VmError> {
    dom.is_active().map_err(libvirt_error)
}

/// Remove the domain and every volume of VM `id` that exists.
fn remove_all(conn: &Connect, config: &LibvirtConfig, id: &str) -> Result<(), VmError> {
    if let Some(dom) = domain(conn, id)? {
        if active(&dom)? {
            dom.destroy().map_err(libvirt_error)?;
        }
        dom.undefine().map_err(libvirt_error)?;
    }
    let pool = pool(conn, config)?;
    for name in [iso_volume(id), disk_volume(id), serial_volume(id)] {
        if let Some(vol) = volume(&pool, &name)? {
            vol.delete(0).map_err(libvirt_error)?;
        }
    }
    Ok(())
}

impl LibvirtBackend {
    /// `root` holds the host's records of its VMs (the domains and volumes
    /// live with libvirt).
    pub fn new(root: &Path, accel: AccelSetting, config: LibvirtConfig) -> Self {
        // libvirt prints every error to stderr by default; ours are returned.
        virt::error::clear_error_callback();
        let local = is_local(&config.uri);
        // `auto` proves KVM by booting a guest here, which says nothing of a remote host.
        let accel = match (accel, local) {
            (AccelSetting::Auto, false) => AccelSetting::Tcg,
            (setting, _) => setting,
        };
        LibvirtBackend {
            config: Arc::new(config),
            records: Records::new(root),
            accel: AccelChooser::new(accel, root),
            local,
        }
    }

    pub fn uri(&self) -> &str {
        &self.config.uri
    }

    /// Run `work` with a connection, on the blocking pool.
    async fn libvirt<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connect, &LibvirtConfig) -> Result<T, VmError> + Send + 'static,
    ) -> Result<T, VmError> {
        let config = self.config.clone();
        tokio::task::spawn_blocking(move || {
            let conn = Connect::open(Some(&config.uri)).map_err(|e| {
                VmError::Libvirt(format!("cannot connect to {}: {}", config.uri, e.message()))
            })?;
            work(&conn, &config)
        })
        .await
        .map_err(|e| VmError::Libvirt(format!("a libvirt call failed: {e}")))?
    }

    /// Connect, and make sure the pool is there: what `serve` checks at start.
    pub async fn check(&self) -> Result<String, VmError> {
        self.libvirt(|conn, config| {
            pool(conn, config)?;
            let version = conn.get_lib_version().map_err(libvirt_error)?;
            Ok(format!(
                "libvirt {}.{}.{} at {}",
                version / 1_000_000,
                version / 1000 % 1000,
                version % 1000,
                config.uri
            ))
        })
        .await
    }

    async fn is_active(&self, id: &str) -> Result<bool, VmError> {
        let id = id.to_owned();
        self.libvirt(move |conn, _| match domain(conn, &id)? {
            Some(dom) => active(&dom),
            None => Ok(false),
        })
        .await
    }
}

impl VmBackend for LibvirtBackend {
    fn kind(&self) -> &'static str {
        "libvirt"
    }

    async fn create(&self, spec: &VmSpec) -> Result<VmRecord, VmError> {
        check_id(&spec.id)?;
        if !spec.forwards.is_empty() {
            return Err(VmError::Unsupported(
                "port forwards need the qemu backend: libvirt's user networking has none".into(),
            ));
        }
        let record = VmRecord {
            spec: spec.clone(),
            accel: self.accel.choose(&spec.iso).await,
            unexpected_stop: None,
        };
        self.records.write(&spec.id, &record)?;
        let made = {
            let spec = spec.clone();
            let accel = record.accel;
            self.libvirt(move |conn, config| {
                let id = &spec.id;
                let pool = pool(conn, config)?;
                let iso = upload(conn, &pool, &iso_volume(id), &spec.iso)?;
                let disk = match spec.disk_gb {
                    Some(gb) => Some(
                        new_volume(&pool, &disk_volume(id), u64::from(gb) << 30, "qcow2")?
                            .get_path()
                            .map_err(libvirt_error)?,
                    ),
                    None => None,
                };
                let serial = new_volume(&pool, &serial_volume(id), 0, "raw")?
                    .get_path()
                    .map_err(libvirt_error)?;
                let files = DomainFiles { iso, disk, serial };
                let dom = Domain::define_xml(conn, &domain_xml(&spec, accel, &files))
                    .map_err(libvirt_error)?;
                dom.create().map_err(libvirt_error)?;
                Ok(())
            })
            .await
        };
        if let Err(e) = made {
            // Nothing half-made: no domain, no volume, no record.
            let id = spec.id.clone();
            let _ = self
                .libvirt(move |conn, config| remove_all(conn, config, &id))
                .await;
            let _ = self.records.remove(&spec.id);
            return Err(e);
        }
        Ok(record)
    }

    async fn start(&self, id: &str) -> Result<VmRecord, VmError> {
        let record = self.record(id)?;
        let owned = id.to_owned();
        self.libvirt(move |conn, _| {
            let dom = domain(conn, &owned)?.ok_or_else(|| VmError::NotFound(owned.clone()))?;
            if !active(&dom)? {
                dom.create().map_err(libvirt_error)?;
            }
            Ok(())
        })
        .await?;
        self.records
            .update(id, |r: &mut VmRecord| r.unexpected_stop = None)?;
        Ok(record)
    }

    async fn state(&self, id: &str) -> VmState {
        let owned = id.to_owned();
        let state = self
            .libvirt(move |conn, _| match domain(conn, &owned)? {
                Some(dom) => Ok(Some(dom.get_state().map_err(libvirt_error)?.0)),
                None => Ok(None),
            })
            .await;
        match state {
            Ok(Some(state)) => match state_word(state) {
                Some(detail) => VmState::Running {
                    detail: detail.into(),
                },
                None => VmState::Stopped,
            },
            Ok(None) => VmState::Stopped,
            Err(e) => {
                tracing::warn!(error = %e, vm = id, "libvirt state");
                VmState::Stopped
            }
        }
    }

    async fn stop(&self, id: &str, force: bool, timeout: Duration) -> Result<StopOutcome, VmError> {
        self.record(id)?;
        let owned = id.to_owned();
        let asked = self
            .libvirt(move |conn, _| {
                let Some(dom) = domain(conn, &owned)? else {
                    return Ok(StopOutcome::AlreadyStopped);
                };
                if !active(&dom)? {
                    return Ok(StopOutcome::AlreadyStopped);
                }
                if force {
                    dom.destroy().map_err(libvirt_error)?;
                    return Ok(StopOutcome::Killed);
                }
                dom.shutdown_flags(virt_sys::VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
                    .map_err(libvirt_error)?;
                Ok(StopOutcome::StillRunning)
            })
            .await?;
        if asked != StopOutcome::StillRunning {
            return Ok(asked);
        }
        let started = Instant::now();
        while started.elapsed() < timeout {
            if !self.is_active(id).await? {
                return Ok(StopOutcome::PoweredOff);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(StopOutcome::StillRunning)
    }

    async fn delete(&self, id: &str) -> Result<(), VmError> {
        self.record(id)?;
        let owned = id.to_owned();
        self.libvirt(move |conn, config| remove_all(conn, config, &owned))
            .await?;
        self.records.remove(id)
    }

    fn record(&self, id: &str) -> Result<VmRecord, VmError> {
        self.records.read(id)
    }

    fn list(&self) -> Vec<String> {
        self.records.list()
    }

    async fn serial_log(&self, id: &str) -> Result<Vec<u8>, VmError> {
        self.record(id)?;
        let owned = id.to_owned();
        self.libvirt(move |conn, config| {
            let pool = pool(conn, config)?;
            // The pool learns the log's current size on refresh.
            pool.refresh(0).map_err(libvirt_error)?;
            match volume(&pool, &serial_volume(&owned))? {
                Some(vol) => download(conn, &vol),
                None => Ok(Vec::new()),
            }
        })
        .await
    }

    async fn vnc_address(&self, id: &str) -> Result<SocketAddr, VmError> {
        self.record(id)?;
        if !self.local {
            return Err(VmError::Unsupported(format!(
                "the browser console needs libvirt on this machine; this server's VMs run at {} \
                 (its VNC listens on that host's loopback)",
                self.config.uri
            )));
        }
        let owned = id.to_owned();
        let xml = self
            .libvirt(move |conn, _| {
                let dom = domain(conn, &owned)?.ok_or_else(|| VmError::NotFound(owned.clone()))?;
                dom.get_xml_desc(0).map_err(libvirt_error)
            })
            .await?;
        let (listen, port) = vnc_listen(&xml)
            .ok_or_else(|| VmError::Invalid("the VM has no VNC server (is it running?)".into()))?;
        let ip: IpAddr = listen
            .parse()
            .map_err(|_| VmError::Invalid(format!("VNC listens on `{listen}`, not an address")))?;
        Ok(SocketAddr::new(ip, port))
    }

    async fn agent(
        &self,
        id: &str,
        request: &serde_json::Value,
        timeout: Duration,
    ) -> Result<serde_json::Value, VmError> {
        self.record(id)?;
        let owned = id.to_owned();
        let text = request.to_string();
        let command = request["execute"].as_str().unwrap_or("?").to_owned();
        let seconds = i32::try_from(timeout.as_secs().max(1)).unwrap_or(i32::MAX);
        let reply = self
            .libvirt(move |conn, _| {
                let dom = domain(conn, &owned)?.ok_or_else(|| VmError::NotFound(owned.clone()))?;
                if !active(&dom)? {
                    return Err(VmError::NotRunning(owned));
                }
                // libvirt syncs with the agent itself, and times out as asked.
                dom.qemu_agent_command(&text, seconds, 0)
                    .map_err(|e| match e.code() {
                        ErrorNumber::AgentUnresponsive | ErrorNumber::AgentUnsynced => {
                            VmError::Agent(AgentError::Timeout(timeout))
                        }
                        _ => libvirt_error(e),
                    })
            })
            .await?;
        let reply: serde_json::Value = serde_json::from_str(&reply)
            .map_err(|_| VmError::Agent(AgentError::Protocol(reply.chars().take(200).collect())))?;
        Ok(reply_value(&command, reply)?)
    }

    /// Domains libvirt saw die (their QEMU crashed or was killed).
    async fn reap(&self) -> Vec<String> {
        let unmarked: Vec<String> = self
            .list()
            .into_iter()
            .filter(|id| self.record(id).is_ok_and(|r| r.unexpected_stop.is_none()))
            .collect();
        let crashed = self
            .libvirt(move |conn, _| {
                let mut crashed = Vec::new();
                for id in unmarked {
                    let Some(dom) = domain(conn, &id)? else {
                        continue;
                    };
                    let (state, reason) = dom.get_state().map_err(libvirt_error)?;
                    let died = state == virt_sys::VIR_DOMAIN_CRASHED
                        || (state == virt_sys::VIR_DOMAIN_SHUTOFF
                            && [
                                virt_sys::VIR_DOMAIN_SHUTOFF_CRASHED,
                                virt_sys::VIR_DOMAIN_SHUTOFF_FAILED,
                            ]
                            .contains(&(reason as virt_sys::virDomainShutoffReason)));
                    if died {
                        crashed.push(id);
                    }
                }
                Ok(crashed)
            })
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "libvirt reaper");
                Vec::new()
            });
        crashed
            .into_iter()
            .filter(|id| {
                self.records
                    .update(id, |r: &mut VmRecord| r.unexpected_stop = Some(unix_now()))
                    .is_ok()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_uris_are_told_from_remote_ones() {
        assert!(is_local("qemu:///system"));
        assert!(is_local("qemu:///session"));
        assert!(!is_local("qemu+ssh://root@kvm1/system"));
        assert!(!is_local("qemu+tcp://10.0.0.2/system"));
    }
}
