//! libvirt's XML for OpenFactory VMs, generated from the same [`VmSpec`]
//! the QEMU backend turns into a command line, and the few facts read back
//! from a live domain. Pure, so it is tested without a libvirt daemon.

use crate::accel::Accel;
use crate::spec::{VmSpec, process_name};

/// The storage volumes a VM's domain uses, by path on the libvirt host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainFiles {
    /// A copy of the build's ISO, owned by libvirt (it relabels it).
    pub iso: String,
    pub disk: Option<String>,
    pub serial: String,
}

/// The domain's name: the same as the QEMU backend's process name, so a
/// VM is recognisable in `ps` and `virsh list` alike.
pub fn domain_name(id: &str) -> String {
    process_name(id)
}

/// The volume names of a VM in the pool.
pub fn iso_volume(id: &str) -> String {
    format!("{id}.iso")
}
pub fn disk_volume(id: &str) -> String {
    format!("{id}.qcow2")
}
pub fn serial_volume(id: &str) -> String {
    format!("{id}.serial.log")
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// A directory pool that holds every OpenFactory VM's volumes.
pub fn pool_xml(name: &str, path: &str) -> String {
    format!(
        "<pool type='dir'><name>{}</name><target><path>{}</path></target></pool>",
        escape(name),
        escape(path)
    )
}

/// A volume of `bytes` bytes: `raw` (the ISO copy, the serial log) or `qcow2`.
pub fn volume_xml(name: &str, bytes: u64, format: &str) -> String {
    format!(
        "<volume><name>{}</name><capacity unit='bytes'>{bytes}</capacity>\
         <target><format type='{}'/></target></volume>",
        escape(name),
        escape(format)
    )
}

/// The domain: the devices of the QEMU backend's command line, in libvirt's words.
pub fn domain_xml(spec: &VmSpec, accel: Accel, files: &DomainFiles) -> String {
    let (kind, cpu) = match accel {
        Accel::Kvm => ("kvm", "<cpu mode='host-passthrough'/>"),
        Accel::Tcg => ("qemu", "<cpu mode='maximum'/>"),
    };
    let disk = files
        .disk
        .as_ref()
        .map(|path| {
            format!(
                "\n    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
                 <source file='{}'/><target dev='vda' bus='virtio'/></disk>",
                escape(path)
            )
        })
        .unwrap_or_default();
    format!(
        "<domain type='{kind}'>
  <name>{name}</name>
  <memory unit='MiB'>{memory}</memory>
  <vcpu>{vcpus}</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='cdrom'/></os>
  <features><acpi/><apic/></features>
  {cpu}
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='cdrom'><driver name='qemu' type='raw'/><source file='{iso}'/><target dev='hdc' bus='ide'/><readonly/></disk>{disk}
    <serial type='file'><source path='{serial}'/><target port='0'/></serial>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    <interface type='user'><model type='virtio'/></interface>
    <graphics type='vnc' autoport='yes' listen='127.0.0.1'/>
    <video><model type='vga'/></video>
  </devices>
</domain>
",
        name = escape(&domain_name(&spec.id)),
        memory = spec.memory_mb,
        vcpus = spec.vcpus,
        iso = escape(&files.iso),
        serial = escape(&files.serial),
    )
}

/// The value of `attr` in the first `<element …>` tag of `xml` that has it.
fn attribute<'x>(tag: &'x str, attr: &str) -> Option<&'x str> {
    for quote in ['\'', '"'] {
        let key = format!(" {attr}={quote}");
        if let Some(at) = tag.find(&key) {
            let rest = &tag[at + key.len()..];
            return rest.find(quote).map(|end| &rest[..end]);
        }
    }
    None
}

/// Where a running domain's VNC server listens, from its live XML.
pub fn vnc_listen(xml: &str) -> Option<(String, u16)> {
    let start = xml
        .find("<graphics type='vnc'")
        .or_else(|| xml.find("<graphics type=\"vnc\""))?;
    let tag = &xml[start..start + xml[start..].find('>')?];
    let port: u16 = attribute(tag, "port")?.parse().ok()?;
    if port == 0 || port == u16::MAX {
        return None;
    }
    let listen = attribute(tag, "listen").unwrap_or("127.0.0.1");
    Some((listen.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmSpec {
        VmSpec {
            id: "ab12".into(),
            iso: "/data/builds/b1/image.iso".into(),
            memory_mb: 1024,
            vcpus: 2,
            disk_gb: Some(4),
            forwards: vec![],
        }
    }

    #[test]
    fn the_domain_has_the_qemu_backends_devices() {
        let files = DomainFiles {
            iso: "/pool/ab12.iso".into(),
            disk: Some("/pool/ab12.qcow2".into()),
            serial: "/pool/ab12.serial.log".into(),
        };
        let xml = domain_xml(&spec(), Accel::Tcg, &files);
        for wanted in [
            "<domain type='qemu'>",
            "<name>openfactory-vm-ab12</name>",
            "<memory unit='MiB'>1024</memory>",
            "<vcpu>2</vcpu>",
            "<cpu mode='maximum'/>",
            "<source file='/pool/ab12.iso'/>",
            "<readonly/>",
            "<source file='/pool/ab12.qcow2'/>",
            "<source path='/pool/ab12.serial.log'/>",
            "name='org.qemu.guest_agent.0'",
            "<graphics type='vnc' autoport='yes' listen='127.0.0.1'/>",
        ] {
            assert!(xml.contains(wanted), "{wanted} missing from {xml}");
        }
        let kvm = domain_xml(
            &spec(),
            Accel::Kvm,
            &DomainFiles {
                disk: None,
                ..files
            },
        );
        assert!(kvm.contains("<domain type='kvm'>") && kvm.contains("host-passthrough"));
        assert!(!kvm.contains("qcow2"));
    }

    #[test]
    fn text_is_escaped() {
        let xml = volume_xml("a'b<c>&", 10, "raw");
        assert!(xml.contains("<name>a&apos;b&lt;c&gt;&amp;</name>"), "{xml}");
        assert!(pool_xml("p", "/x/'y").contains("/x/&apos;y"));
    }

    #[test]
    fn the_vnc_port_is_read_from_live_xml() {
        let live = "<devices>\n<graphics type='vnc' port='5901' autoport='yes' listen='127.0.0.1'>\n\
                    <listen type='address' address='127.0.0.1'/></graphics></devices>";
        assert_eq!(vnc_listen(live), Some(("127.0.0.1".into(), 5901)));
        // Not running: autoport has not chosen yet.
        assert_eq!(
            vnc_listen("<graphics type='vnc' port='-1' autoport='yes'/>"),
            None
        );
        assert_eq!(vnc_listen("<domain/>"), None);
    }
}
