//! A dual-stack TUN device: one IPv4 address and any number of IPv6 ones.

use std::io;

use anyhow::{Context, bail};
use tun_rs::{DeviceBuilder, SyncDevice};

use ipnet::IpNet;

// ANCHOR: create_tun
/// Creates the TUN device `name` with `addresses` and `mtu`, and brings it
/// up. For each address the kernel adds the route to its prefix through the
/// device (10.0.0.0/24, fd00::/64), so both families now lead here. A TUN
/// device is `NOARP`, so IPv6 skips duplicate address detection on it and
/// the addresses are usable at once.
pub fn create_tun(name: &str, addresses: &[IpNet], mtu: u16) -> anyhow::Result<SyncDevice> {
    step01_ping_tun::ifname::check(name)?;
    if addresses.iter().filter(|a| matches!(a, IpNet::V4(_))).count() > 1 {
        bail!("give at most one IPv4 --address (and any number of IPv6 ones)");
    }
    let mut builder = DeviceBuilder::new().name(name).mtu(mtu);
    for address in addresses {
        builder = match address {
            IpNet::V4(c) => builder.ipv4(c.addr(), c.prefix_len(), None),
            IpNet::V6(c) => builder.ipv6(c.addr(), c.prefix_len()),
        };
    }
    let list: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    builder
        .build_sync()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => anyhow::Error::new(e)
                .context("/dev/net/tun is missing: load the tun module with `modprobe tun`"),
            _ => anyhow::Error::new(e),
        })
        .with_context(|| {
            format!(
                "creating TUN device {name} with {} and MTU {mtu}",
                list.join(", ")
            )
        })
}
// ANCHOR_END: create_tun
