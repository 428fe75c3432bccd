//! A network namespace for one node, joined to this host by a veth pair on addresses
//! made for it (10.77.0.1 here, 10.77.0.2 inside; nothing else is touched), and an
//! nftables table inside it that drops everything on its end of the pair: the node's
//! host cut off the network, then healed. Removed (link, namespace and rules) on drop.

use std::process::Command;

/// The host's end of the pair.
pub(crate) const HOST_ADDR: &str = "10.77.0.1";
/// The namespace's end.
pub(crate) const INSIDE_ADDR: &str = "10.77.0.2";

/// A namespace and its veth pair, removed on drop.
pub(crate) struct Netns {
    /// The namespace's name (`ip netns exec <name> …`).
    pub(crate) name: String,
    host_if: String,
    inside_if: String,
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} exited with {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    /// Creates the namespace and the pair; `Err` when this machine does not allow it
    /// (not root, no `ip` or `nft`).
    pub(crate) fn create() -> Result<Self, String> {
        let id = std::process::id() % 100_000;
        let ns = Self {
            name: format!("fbfaults-{id}"),
            host_if: format!("fbf{id}h"),
            inside_if: format!("fbf{id}n"),
        };
        run(&["nft", "--version"])?;
        run(&["ip", "netns", "add", &ns.name])?;
        // From here on, drop removes what was made.
        let host = format!("{HOST_ADDR}/24");
        let inside = format!("{INSIDE_ADDR}/24");
        let exec = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", ns.name.as_str()];
            all.extend_from_slice(args);
            run(&all)
        };
        run(&[
            "ip",
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns.inside_if,
            "netns",
            &ns.name,
        ])?;
        run(&["ip", "addr", "add", &host, "dev", &ns.host_if])?;
        run(&["ip", "link", "set", &ns.host_if, "up"])?;
        exec(&["ip", "addr", "add", &inside, "dev", &ns.inside_if])?;
        exec(&["ip", "link", "set", &ns.inside_if, "up"])?;
        exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Drops every packet on the namespace's end of the pair, both ways.
    pub(crate) fn cut(&self) {
        let input =
            "add chain inet fbcut input { type filter hook input priority 0 ; policy accept ; }";
        let output =
            "add chain inet fbcut output { type filter hook output priority 0 ; policy accept ; }";
        let drop_in = format!(
            "add rule inet fbcut input iifname \"{}\" drop",
            self.inside_if
        );
        let drop_out = format!(
            "add rule inet fbcut output oifname \"{}\" drop",
            self.inside_if
        );
        for cmd in ["add table inet fbcut", input, output, &drop_in, &drop_out] {
            run(&["ip", "netns", "exec", &self.name, "nft", cmd])
                .unwrap_or_else(|e| panic!("cannot cut the namespace off: {e}"));
        }
    }

    /// Lets packets through again.
    pub(crate) fn heal(&self) {
        run(&[
            "ip",
            "netns",
            "exec",
            &self.name,
            "nft",
            "delete table inet fbcut",
        ])
        .unwrap_or_else(|e| panic!("cannot heal the namespace: {e}"));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run(&["ip", "link", "del", &self.host_if]);
        let _ = run(&["ip", "netns", "del", &self.name]);
    }
}
