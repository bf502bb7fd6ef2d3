//! Client sockets from several loopback source addresses.
//!
//! One source address can hold one connection per ephemeral port to a given server port
//! (`net.ipv4.ip_local_port_range`, ~28,000 ports by default). Loopback is the whole of
//! `127.0.0.0/8`, so spreading connections over `127.0.0.2`, `127.0.0.3`, ... lets one machine
//! open 50,000+ connections to one server port. Only used when the server is on IPv4 loopback.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::net::{TcpSocket, TcpStream};

/// How many source addresses connections rotate over (`127.0.0.2` ..= `127.0.0.17`): room for
/// ~450,000 connections with the default ephemeral port range.
pub const SOURCE_ADDRESSES: u8 = 16;

static NEXT: AtomicU64 = AtomicU64::new(0);

/// The source address of the `n`th connection to a loopback server.
pub fn source_address(n: u64) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 2 + (n % u64::from(SOURCE_ADDRESSES)) as u8)
}

/// Connects to `host` (`IP:PORT`). To an IPv4 loopback server the connection comes from the
/// next source address in turn; to anything else it is an ordinary connect.
pub async fn connect(host: &str) -> std::io::Result<TcpStream> {
    let Ok(addr) = host.parse::<SocketAddr>() else {
        return TcpStream::connect(host).await;
    };
    let stream = match addr.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => {
            let socket = TcpSocket::new_v4()?;
            let src = source_address(NEXT.fetch_add(1, Ordering::Relaxed));
            socket.bind(SocketAddr::new(IpAddr::V4(src), 0))?;
            socket.connect(addr).await?
        }
        _ => TcpStream::connect(addr).await?,
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_over_loopback_sources() {
        assert_eq!(source_address(0), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(source_address(1), Ipv4Addr::new(127, 0, 0, 3));
        assert_eq!(
            source_address(u64::from(SOURCE_ADDRESSES)),
            Ipv4Addr::new(127, 0, 0, 2)
        );
        assert!((0..1000).all(|n| source_address(n).is_loopback()));
    }

    #[tokio::test]
    async fn loopback_connections_come_from_several_addresses() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let host = listener.local_addr().expect("addr").to_string();
        let mut seen = std::collections::BTreeSet::new();
        let mut keep = Vec::new();
        for _ in 0..4 {
            keep.push(connect(&host).await.expect("connect"));
            let (_, peer) = listener.accept().await.expect("accept");
            assert!(peer.ip().is_loopback());
            seen.insert(peer.ip());
        }
        assert!(seen.len() >= 2, "one source address only: {seen:?}");
    }
}
