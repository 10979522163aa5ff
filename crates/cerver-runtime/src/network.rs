//! The containers engine's network, host side: one /30 per sandbox (from its uid-range slot,
//! which is already unique across every server on the host) and the host firewall
//! (`policy/egress.nft`). The veth pair itself is created by the helper and configured inside
//! by the sandbox's init (`cerver_jail::net`); the kernel removes it with the sandbox.

use std::net::Ipv4Addr;
use std::time::Duration;

use cerver_jail::protocol::Egress;
use tokio::io::AsyncWriteExt;

/// The firewall, as data.
const RULESET: &str = include_str!("../policy/egress.nft");
/// Set when this host's IPv4 forwarding was off before a Cerver server switched it on: the
/// firewall then also drops every forwarded packet that is not a sandbox's, so that the host
/// routes nothing else than before.
const FORWARDING_MARKER: &str = "/run/cerver/ip_forward_was_off";
const NFT_TIMEOUT: Duration = Duration::from_secs(20);

/// Addressing and resolvers for the containers engine's sandboxes.
#[derive(Clone, Debug)]
pub struct EgressPlan {
    subnet: Ipv4Addr,
    nameservers: Vec<Ipv4Addr>,
}

impl EgressPlan {
    /// The veth pair of the sandbox holding uid-range `slot`: `subnet + 4*slot` is its /30.
    pub fn for_slot(&self, slot: u32) -> Egress {
        let base = u32::from(self.subnet) + slot * 4;
        Egress {
            host_if: format!("cerv{slot}"),
            gateway: Ipv4Addr::from(base + 1),
            address: Ipv4Addr::from(base + 2),
            prefix_len: 30,
            nameservers: self.nameservers.clone(),
        }
    }
}

/// Installs the firewall and switches IPv4 forwarding on. Fails (and the containers engine is
/// then unavailable, with this reason) when `nft` is missing or the kernel refuses.
pub async fn setup(subnet: Ipv4Addr) -> Result<EgressPlan, String> {
    let nameservers = nameservers();
    let host_nets = host_networks();
    let forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .map_err(|e| format!("read ip_forward: {e}"))?;
    if forwarding.trim() == "0" {
        std::fs::create_dir_all("/run/cerver").map_err(|e| format!("/run/cerver: {e}"))?;
        std::fs::write(FORWARDING_MARKER, "").map_err(|e| format!("{FORWARDING_MARKER}: {e}"))?;
    }
    let guard = std::path::Path::new(FORWARDING_MARKER).exists();
    let ruleset = render(&nameservers, &host_nets, guard);
    apply(&ruleset).await?;
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        .map_err(|e| format!("enable IPv4 forwarding: {e}"))?;
    Ok(EgressPlan {
        subnet,
        nameservers,
    })
}

fn render(nameservers: &[Ipv4Addr], host_nets: &[(Ipv4Addr, u8)], guard: bool) -> String {
    let host_nets: String = host_nets
        .iter()
        .map(|(net, len)| format!(", {net}/{len}"))
        .collect();
    let dns = if nameservers.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = nameservers.iter().map(|ns| ns.to_string()).collect();
        format!(
            "    iifname \"cerv*\" ip daddr {{ {} }} meta l4proto {{ tcp, udp }} th dport 53 accept",
            list.join(", ")
        )
    };
    let guard = if guard {
        "    iifname != \"cerv*\" oifname != \"cerv*\" drop"
    } else {
        ""
    };
    RULESET
        .replace("@HOST_NETS@", &host_nets)
        .replace("@DNS_RULES@", &dns)
        .replace("@FORWARD_GUARD@", guard)
}

/// `nft` is the tool made for this (one atomic transaction from a readable ruleset); the
/// netlink encoding of nftables rules by hand would be far larger and harder to audit.
async fn apply(ruleset: &str) -> Result<(), String> {
    let nft = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.is_file())
        .or_else(|| crate::find_on_path("nft"))
        .ok_or("`nft` not found (install the nftables package)")?;
    let mut child = tokio::process::Command::new(nft)
        .args(["-f", "-"])
        .env_clear()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("run nft: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(ruleset.as_bytes())
            .await
            .map_err(|e| format!("write to nft: {e}"))?;
    }
    let out = tokio::time::timeout(NFT_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| "nft did not finish in time".to_string())?
        .map_err(|e| format!("nft: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "nft refused the firewall: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// The IPv4 resolvers of `/etc/resolv.conf`; when those are loopback addresses (a local stub
/// such as systemd-resolved, unreachable from a sandbox), the stub's upstream servers.
fn nameservers() -> Vec<Ipv4Addr> {
    let parse = |path: &str| -> Vec<Ipv4Addr> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.trim().strip_prefix("nameserver"))
            .filter_map(|rest| rest.trim().parse::<Ipv4Addr>().ok())
            .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
            .collect()
    };
    let servers = parse("/etc/resolv.conf");
    if servers.is_empty() {
        parse("/run/systemd/resolve/resolv.conf")
    } else {
        servers
    }
}

/// The IPv4 networks the host is directly attached to (its neighbours), from the kernel's
/// routing table: routes without a gateway.
fn host_networks() -> Vec<(Ipv4Addr, u8)> {
    let table = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    parse_routes(&table)
}

fn parse_routes(table: &str) -> Vec<(Ipv4Addr, u8)> {
    let mut nets = Vec::new();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 || f[0].starts_with("cerv") {
            continue;
        }
        let hex = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::from_be);
        let (Some(dest), Some(gateway), Some(mask)) = (hex(f[1]), hex(f[2]), hex(f[7])) else {
            continue;
        };
        if gateway != 0 || mask == 0 {
            continue;
        }
        nets.push((Ipv4Addr::from(dest), mask.count_ones() as u8));
    }
    nets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connected_networks_come_from_gatewayless_routes() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
            eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
            cerv7\t1C00D50A\t00000000\t0001\t0\t0\t0\tFCFFFFFF\t0\t0\t0\n";
        assert_eq!(
            parse_routes(table),
            vec![("192.0.2.0".parse().unwrap(), 24)]
        );
    }

    #[test]
    fn slots_get_disjoint_slash_30s() {
        let plan = EgressPlan {
            subnet: "10.213.0.0".parse().unwrap(),
            nameservers: vec![],
        };
        let a = plan.for_slot(0);
        let b = plan.for_slot(4095);
        assert_eq!(
            (a.gateway, a.address),
            ("10.213.0.1".parse().unwrap(), "10.213.0.2".parse().unwrap())
        );
        assert_eq!(b.address, "10.213.63.254".parse::<Ipv4Addr>().unwrap());
        assert_eq!(b.host_if, "cerv4095");
    }

    #[test]
    fn ruleset_renders_resolvers_neighbours_and_guard() {
        let r = render(
            &["10.255.255.53".parse().unwrap()],
            &[("192.0.2.0".parse().unwrap(), 24)],
            true,
        );
        assert!(r.contains("224.0.0.0/3 , 192.0.2.0/24"));
        assert!(
            r.contains("ip daddr { 10.255.255.53 } meta l4proto { tcp, udp } th dport 53 accept")
        );
        assert!(r.contains("iifname != \"cerv*\" oifname != \"cerv*\" drop"));
        for placeholder in ["@HOST_NETS@", "@DNS_RULES@", "@FORWARD_GUARD@"] {
            assert!(!r.contains(placeholder));
        }
    }
}
