//! `gingham-cni install`: the DaemonSet's install-cni step, built into the plugin so the image
//! needs no shell. Copies this executable to `BIN_DIR/gingham` and the conflist to
//! `CONF_DIR/<its name>`, each written to a temporary file and renamed into place, so a runtime
//! never sees half a plugin or half a configuration.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, PartialEq)]
pub struct InstallArgs {
    pub bin_dir: PathBuf,
    pub conf_dir: PathBuf,
    pub conflist: PathBuf,
}

pub const USAGE: &str = "usage: gingham-cni install --bin-dir DIR --conf-dir DIR --conflist FILE";

pub fn parse_args(args: &[String]) -> Result<InstallArgs, String> {
    let (mut bin_dir, mut conf_dir, mut conflist) = (None, None, None);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let slot = match flag.as_str() {
            "--bin-dir" => &mut bin_dir,
            "--conf-dir" => &mut conf_dir,
            "--conflist" => &mut conflist,
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        };
        *slot = Some(PathBuf::from(it.next().ok_or_else(|| format!("{flag} needs a value; {USAGE}"))?));
    }
    match (bin_dir, conf_dir, conflist) {
        (Some(bin_dir), Some(conf_dir), Some(conflist)) => Ok(InstallArgs { bin_dir, conf_dir, conflist }),
        _ => Err(USAGE.to_string()),
    }
}

/// The conflist must be one a runtime can use with this plugin: JSON, a name, and a `gingham`
/// plugin entry that passes the plugin's own configuration checks.
fn check_conflist(text: &str) -> Result<(), String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("the conflist is not JSON: {e}"))?;
    if value.get("name").and_then(|n| n.as_str()).is_none_or(str::is_empty) {
        return Err("the conflist has no name".into());
    }
    let plugins = value.get("plugins").and_then(|p| p.as_array()).ok_or("the conflist has no plugins list")?;
    let ours = plugins.iter().find(|p| p.get("type").and_then(|t| t.as_str()) == Some("gingham")).ok_or("no plugin of type gingham")?;
    let mut conf = ours.clone();
    for key in ["cniVersion", "name"] {
        if let Some(v) = value.get(key) {
            conf[key] = v.clone();
        }
    }
    crate::NetConf::parse(conf).map(drop).map_err(|e| format!("the gingham plugin entry: {} ({})", e.msg, e.details))
}

fn write_atomically(dest: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("gingham");
    let tmp = dest.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, dest)
}

/// Installs `plugin` (this executable's bytes) and the conflist; returns what it wrote.
pub fn install(args: &InstallArgs, plugin: &Path) -> Result<Vec<PathBuf>, String> {
    let text = std::fs::read_to_string(&args.conflist).map_err(|e| format!("{}: {e}", args.conflist.display()))?;
    check_conflist(&text).map_err(|e| format!("{}: {e}", args.conflist.display()))?;
    let binary = std::fs::read(plugin).map_err(|e| format!("{}: {e}", plugin.display()))?;
    let plugin_dest = args.bin_dir.join("gingham");
    write_atomically(&plugin_dest, &binary, 0o755).map_err(|e| format!("{}: {e}", plugin_dest.display()))?;
    let conf_name = args.conflist.file_name().ok_or("the conflist path has no file name")?;
    let conf_dest = args.conf_dir.join(conf_name);
    write_atomically(&conf_dest, text.as_bytes(), 0o644).map_err(|e| format!("{}: {e}", conf_dest.display()))?;
    Ok(vec![plugin_dest, conf_dest])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let d = std::env::temp_dir().join(format!("gingham-install-{}-{nonce:x}", std::process::id()));
        std::fs::create_dir_all(d.join("bin")).unwrap();
        std::fs::create_dir_all(d.join("net.d")).unwrap();
        d
    }

    #[test]
    fn installs_plugin_and_conflist_and_refuses_a_bad_conflist_writing_nothing() {
        let d = dir();
        let good = r#"{"cniVersion": "1.0.0", "name": "k8s-pod-network", "plugins": [{"type": "gingham", "agentSocket": "/var/run/gingham/cni.sock"}]}"#;
        std::fs::write(d.join("10-gingham.conflist"), good).unwrap();
        std::fs::write(d.join("plugin"), b"\x7fELF...").unwrap();
        let args = parse_args(&["--bin-dir", "B", "--conf-dir", "C", "--conflist", "F"].map(String::from)).unwrap();
        assert_eq!(args, InstallArgs { bin_dir: "B".into(), conf_dir: "C".into(), conflist: "F".into() });
        assert!(parse_args(&["--bin-dir".to_string()]).is_err());
        let args = InstallArgs { bin_dir: d.join("bin"), conf_dir: d.join("net.d"), conflist: d.join("10-gingham.conflist") };
        install(&args, &d.join("plugin")).unwrap();
        assert_eq!(std::fs::read(d.join("bin/gingham")).unwrap(), b"\x7fELF...");
        assert_eq!(std::fs::metadata(d.join("bin/gingham")).unwrap().permissions().mode() & 0o777, 0o755);
        assert_eq!(std::fs::read_to_string(d.join("net.d/10-gingham.conflist")).unwrap(), good);

        std::fs::write(d.join("bad.conflist"), r#"{"name": "x", "plugins": [{"type": "bridge"}]}"#).unwrap();
        let bad = InstallArgs { conflist: d.join("bad.conflist"), ..args };
        std::fs::remove_file(d.join("bin/gingham")).unwrap();
        assert!(install(&bad, &d.join("plugin")).unwrap_err().contains("no plugin of type gingham"));
        assert!(!d.join("bin/gingham").exists() && !d.join("net.d/bad.conflist").exists());
        let _ = std::fs::remove_dir_all(&d);
    }
}
