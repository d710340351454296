//! `sd_notify` without libsystemd: one datagram to `$NOTIFY_SOCKET`.

use std::os::unix::net::UnixDatagram;

/// Send `state` (e.g. `READY=1`, `STOPPING=1`, `STATUS=...`) when `NOTIFY_SOCKET` is set.
/// Failures are logged and otherwise ignored: notification is advisory.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let result = (|| -> std::io::Result<()> {
        let sock = UnixDatagram::unbound()?;
        let bytes = path.as_encoded_bytes();
        if let Some(abstract_name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        } else {
            sock.send_to(state.as_bytes(), &path)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        tracing::warn!("sd_notify({state}) failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn notify_reaches_the_socket() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("notify");
        let server = std::os::unix::net::UnixDatagram::bind(&p).unwrap();
        // SAFETY (test): this test is the only one touching NOTIFY_SOCKET.
        std::env::set_var("NOTIFY_SOCKET", &p);
        super::notify("READY=1");
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 32];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
