//! The egress volume of one containers sandbox: its bandwidth and new-connection rate, bounded
//! on the host (`policy/rates.nft`, a table of its own per sandbox). The sandbox holds no
//! capability over the host's netfilter, so it cannot lift the bound.
//!
//! Why nftables rather than `tc`: the containers engine already needs `nft`; a table per
//! sandbox is written and removed in one atomic transaction; it counts new connections with
//! conntrack (which `tc` cannot without extra actions); and a host kernel without `tc`'s police
//! action (common in minimal kernels, this one included) still enforces it. An ifb device per
//! sandbox would shape more smoothly, but would live in the host's namespace and outlive a
//! crashed server; a table that outlives one matches an interface name that the next sandbox
//! of the same slot overwrites.

/// The rules, as data.
const TEMPLATE: &str = include_str!("../policy/rates.nft");

/// A sandbox's egress bounds. `0` leaves that bound off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EgressRates {
    /// Bytes per second the sandbox may send (IP packets, headers included).
    pub bytes_per_second: u64,
    /// New connections (TCP, UDP flows, ICMP) per second; the burst is twice as many.
    pub connections_per_second: u32,
}

impl EgressRates {
    /// `mbit` megabits (10^6 bits) per second and `connections` new connections per second.
    pub fn new(mbit: u64, connections: u32) -> Self {
        EgressRates {
            bytes_per_second: mbit.saturating_mul(125_000),
            connections_per_second: connections,
        }
    }
}

impl Default for EgressRates {
    /// 50 Mbit/s and 50 new connections per second (burst 100).
    fn default() -> Self {
        EgressRates::new(50, 50)
    }
}

/// The table of the sandbox in uid-range `slot` (one slot, one table, across every server).
fn table(slot: u32) -> String {
    format!("cerver_rate_{slot}")
}

/// The smallest byte bucket: a veth hands over segmentation-offloaded packets of up to 64 KiB,
/// and a bucket smaller than one of them would never let it through.
const MIN_BUCKET: u64 = 256 << 10;

fn render(slot: u32, host_if: &str, rates: EgressRates) -> String {
    let conn = match rates.connections_per_second {
        0 => String::new(),
        n => format!(
            "    iifname \"{host_if}\" ct state new limit rate over {n}/second burst {} packets drop",
            u64::from(n) * 2
        ),
    };
    // The kernel's byte bucket holds one second's worth plus the burst: a sandbox may send
    // at most `rate * (t + 1)` bytes in `t` seconds. The burst only tops small rates up to
    // `MIN_BUCKET`.
    let bytes = match rates.bytes_per_second {
        0 => String::new(),
        n if n < MIN_BUCKET => format!(
            "    iifname \"{host_if}\" limit rate over {n} bytes/second burst {} bytes drop",
            MIN_BUCKET - n
        ),
        n => format!("    iifname \"{host_if}\" limit rate over {n} bytes/second drop"),
    };
    TEMPLATE
        .replace("@TABLE@", &table(slot))
        .replace("@IFACE@", host_if)
        .replace("@CONN_RULE@", &conn)
        .replace("@BYTE_RULE@", &bytes)
}

/// Writes (or replaces) the bounds of the sandbox behind `host_if`.
pub(crate) async fn apply(slot: u32, host_if: &str, rates: EgressRates) -> Result<(), String> {
    crate::network::apply(&render(slot, host_if, rates)).await
}

/// Removes the sandbox's table (nothing when there is none).
pub(crate) async fn remove(slot: u32) -> Result<(), String> {
    let name = table(slot);
    crate::network::apply(&format!("table inet {name}\ndelete table inet {name}\n")).await
}

/// Removes the tables of sandboxes that no longer exist (a server that crashed left them;
/// they matched nothing meanwhile): those whose uid-range slot no one holds.
pub(crate) async fn reap_stale(lock_dir: &std::path::Path) {
    let Ok(nft) = crate::network::nft_binary() else {
        return;
    };
    let Ok(out) = tokio::process::Command::new(nft)
        .args(["list", "tables", "inet"])
        .env_clear()
        .output()
        .await
    else {
        return;
    };
    let listed = String::from_utf8_lossy(&out.stdout);
    for slot in stale_slots(&listed) {
        // The slot's lock is held across the delete: no sandbox can take the slot (and write
        // its table) meanwhile.
        if let Some(_held) = crate::uids::hold_if_free(lock_dir, slot) {
            let _ = remove(slot).await;
        }
    }
}

fn stale_slots(listed: &str) -> Vec<u32> {
    listed
        .lines()
        .filter_map(|l| l.trim().strip_prefix("table inet cerver_rate_"))
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_rate_tables_among_all() {
        let listed = "table inet cerver\ntable inet cerver_rate_12\ntable inet cerver_egress\ntable inet cerver_rate_x\ntable inet cerver_rate_7\n";
        assert_eq!(stale_slots(listed), [12, 7]);
    }

    #[test]
    fn renders_both_bounds_or_leaves_them_off() {
        let r = render(7, "cerv7", EgressRates::new(8, 20));
        assert!(r.contains("table inet cerver_rate_7 {"));
        assert!(r.contains(
            "iifname \"cerv7\" ct state new limit rate over 20/second burst 40 packets drop"
        ));
        assert!(r.contains("iifname \"cerv7\" limit rate over 1000000 bytes/second drop"));
        for placeholder in ["@TABLE@", "@IFACE@", "@CONN_RULE@", "@BYTE_RULE@"] {
            assert!(!r.contains(placeholder), "{r}");
        }
        let off = render(7, "cerv7", EgressRates::new(0, 0));
        assert!(!off.contains("limit rate"));
        let small = render(1, "cerv1", EgressRates::new(1, 1));
        assert!(small.contains("rate over 125000 bytes/second burst 137144 bytes drop"));
    }
}
