//! One appliance's HTTP/3 session, pinned to the certificate steering named.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::{Buf, Bytes, BytesMut};
use fillmesh_net::tls::{player_client_config, SERVER_NAME};

use crate::Target;

type SendRequest = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// One appliance's HTTP/3 session.
pub(crate) struct Session {
    send: SendRequest,
    pub(crate) endpoint: quinn::Endpoint,
}

impl Session {
    pub(crate) async fn open(target: &Target, local: Option<IpAddr>) -> anyhow::Result<Self> {
        let pin = target
            .cert_pin()
            .with_context(|| format!("steering gave no certificate fingerprint for {}", target.peer_id))?;
        let authority = target
            .url
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| u.authority().map(|a| a.as_str().to_owned()))
            .with_context(|| format!("bad appliance URL {}", target.url))?;
        let addr: SocketAddr = authority.parse().with_context(|| format!("appliance address {authority}"))?;
        let any: IpAddr = if addr.is_ipv4() { [0u8; 4].into() } else { [0u16; 8].into() };
        let bind = SocketAddr::new(local.unwrap_or(any), 0);
        // Our own socket, its receive buffer sized as a node's: with the kernel's default
        // (208 KiB here) a fast download drops datagrams in the kernel, which the appliance
        // then sends again.
        let (socket, _) = fillmesh_net::socket::bind(bind, fillmesh_net::endpoint::DEFAULT_UDP_BUFFER)?;
        let mut endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            None,
            socket,
            Arc::new(quinn::TokioRuntime),
        )?;
        let tls = quinn::crypto::rustls::QuicClientConfig::try_from(player_client_config(pin)?)?;
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(tls)));
        let conn = tokio::time::timeout(Duration::from_secs(5), endpoint.connect(addr, SERVER_NAME)?)
            .await
            .context("connecting timed out")??;
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn)).await?;
        tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        Ok(Self { send, endpoint })
    }

    /// GET `path` (with an optional Range), returning status, headers and the body, refusing
    /// a body longer than `limit`.
    pub(crate) async fn get(
        &self,
        path: &str,
        range: Option<(u64, u64)>,
        limit: u64,
    ) -> anyhow::Result<(http::StatusCode, http::HeaderMap, Bytes)> {
        let mut request = http::Request::get(format!("https://{SERVER_NAME}{path}"));
        if let Some((start, end)) = range {
            request = request.header("range", format!("bytes={start}-{end}"));
        }
        let mut send = self.send.clone();
        let mut stream = send.send_request(request.body(())?).await?;
        stream.finish().await?;
        let response = stream.recv_response().await?;
        // Sized up front (a chunk's limit is its length): growing by doubling cost a copy
        // and fresh zeroed pages on every step, on the path to the first byte.
        let mut body = BytesMut::with_capacity(limit.min(16 << 20) as usize);
        while let Some(mut piece) = stream.recv_data().await? {
            anyhow::ensure!(
                body.len() as u64 + piece.remaining() as u64 <= limit,
                "response body longer than {limit} bytes"
            );
            while piece.has_remaining() {
                let part = piece.chunk();
                body.extend_from_slice(part);
                let n = part.len();
                piece.advance(n);
            }
        }
        Ok((response.status(), response.headers().clone(), body.freeze()))
    }
}
