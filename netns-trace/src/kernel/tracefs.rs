//! tracefs: where it is (mounting it if nobody did) and the record layout
//! of the tracepoints the degraded mode reads.
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _, Result};

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Returns the tracefs root, mounting it at /sys/kernel/tracing if no
/// candidate is mounted (minimal systems and fresh VMs often have none).
pub fn ensure_mounted() -> Option<PathBuf> {
    if let Some(found) = find() {
        return Some(found);
    }
    let target = std::ffi::CString::new(CANDIDATES[0]).ok()?;
    let fstype = std::ffi::CString::new("tracefs").ok()?;
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        log::debug!("mounting tracefs: {}", std::io::Error::last_os_error());
    }
    find()
}

fn find() -> Option<PathBuf> {
    CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("events").is_dir())
}

/// Offset of `field` in the record of tracepoint `category/name`.
pub fn field_offset(tracefs: &Path, category: &str, name: &str, field: &str) -> Result<u32> {
    let path = tracefs
        .join("events")
        .join(category)
        .join(name)
        .join("format");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    parse_field_offset(&text, field).ok_or_else(|| anyhow!("{}: no field {field}", path.display()))
}

/// Parses a tracefs `format` file: `field:<type> <name>;\toffset:N;...`.
pub fn parse_field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?;
        let (decl, rest) = decl.split_once(';')?;
        let name = decl.rsplit([' ', '*']).next()?;
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        let off = rest.trim().strip_prefix("offset:")?;
        off.split(';').next()?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::parse_field_offset;

    const UNSHARE: &str = "name: sys_enter_unshare\nID: 192\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\tfield:unsigned long unshare_flags;\toffset:16;\tsize:8;\tsigned:0;\n";
    const WQ: &str = "format:\n\tfield:void * work;\toffset:8;\tsize:8;\tsigned:0;\n\tfield:void * function;\toffset:16;\tsize:8;\tsigned:0;\n\tfield:char comm[16];\toffset:24;\tsize:16;\tsigned:0;\n";

    #[test]
    fn finds_fields_by_name() {
        assert_eq!(parse_field_offset(UNSHARE, "unshare_flags"), Some(16));
        assert_eq!(parse_field_offset(UNSHARE, "common_pid"), Some(4));
        assert_eq!(parse_field_offset(WQ, "work"), Some(8));
        assert_eq!(parse_field_offset(WQ, "function"), Some(16));
        assert_eq!(parse_field_offset(WQ, "comm"), Some(24));
    }

    #[test]
    fn missing_field_is_none() {
        assert_eq!(parse_field_offset(UNSHARE, "ret"), None);
        assert_eq!(parse_field_offset("garbage", "ret"), None);
    }
}
