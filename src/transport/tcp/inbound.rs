//! The inbound side: the listener, and per connection the handshake
//! checks and the envelopes handed to the node.

// The transport's shared state, constants and imports.
use super::*;

pub(super) async fn run_listener(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, remote)) => match shared.admission.admit(remote.ip()) {
                Ok(pending) => {
                    tokio::spawn(serve_inbound(shared.clone(), stream, remote, pending));
                }
                Err(refusal) => {
                    // Closed at once: nothing is read or buffered for it.
                    let reason = refusal.to_string();
                    if shared.should_warn_refusal(&reason) {
                        warn!(node_id = shared.node_id, %remote, %reason, "refusing inbound connection");
                    }
                    drop(stream);
                }
            },
            Err(e) => {
                // Typically out of file descriptors: pause rather than spin.
                warn!(node_id = shared.node_id, error = %e, "accept failed");
                tokio::select! {
                    _ = shared.cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
}

pub(super) async fn serve_inbound(
    shared: Arc<Shared>,
    stream: TcpStream,
    remote: SocketAddr,
    pending: limits::Pending,
) {
    let node_id = shared.node_id;
    let _ = stream.set_nodelay(true);
    let (read, write, certificates) = match shared.accept_halves(stream).await {
        Ok(halves) => halves,
        Err(reason) => {
            if shared.should_warn_refusal(&reason) {
                warn!(node_id, %remote, %reason, "refusing inbound connection");
            } else {
                debug!(node_id, %remote, %reason, "refusing inbound connection again");
            }
            return;
        }
    };
    let mut reader = FramedRead::new(read, codec(HANDSHAKE_MAX_FRAME));
    // Kept alive until the function returns: dropping the write half would
    // half-close the socket, which the dialer reads as a lost connection.
    let mut writer = FramedWrite::new(write, codec(HANDSHAKE_MAX_FRAME));

    let first = tokio::select! {
        _ = shared.cancel.cancelled() => return,
        first = tokio::time::timeout(shared.handshake_timeout, reader.next()) => first,
    };
    let frame = match first {
        Ok(Some(Ok(frame))) => frame,
        Ok(Some(Err(e))) => {
            warn!(node_id, %remote, error = %e, "closing inbound connection: bad handshake frame");
            return;
        }
        Ok(None) => {
            debug!(node_id, %remote, "inbound connection closed before the handshake");
            return;
        }
        Err(_) => {
            warn!(node_id, %remote, "closing inbound connection: no handshake in time");
            return;
        }
    };
    let (version, cluster_id, peer_id, address) = match decode_handshake(&frame) {
        Ok(Handshake::Hello {
            version,
            cluster_id,
            node_id,
            address,
        }) => (version, cluster_id, node_id, address),
        Ok(other) => {
            warn!(node_id, %remote, frame = ?other, "closing inbound connection: expected a hello");
            return;
        }
        Err(e) => {
            warn!(node_id, %remote, error = %e, "closing inbound connection: undecodable handshake");
            return;
        }
    };

    let refusal = shared
        .check_hello(version, &cluster_id, peer_id)
        .or_else(|| certificates.refuses(&shared, peer_id));
    if let Some(reason) = refusal {
        if shared.should_warn_refusal(&reason) {
            warn!(
                node_id,
                peer_id,
                %remote,
                expected_version = PROTOCOL_VERSION,
                received_version = version,
                expected_cluster_id = %shared.cluster_id,
                received_cluster_id = %shorten(&cluster_id),
                %reason,
                "refusing inbound connection"
            );
        } else {
            debug!(node_id, peer_id, %remote, %reason, "refusing inbound connection again");
        }
        if let Ok(frame) = encode_handshake(&Handshake::Refuse { reason }) {
            // Best effort: the dialer learns why; we close either way.
            let _ = tokio::time::timeout(shared.handshake_timeout, writer.send(frame)).await;
        }
        return;
    }

    let accept = match encode_handshake(&Handshake::Accept { node_id }) {
        Ok(frame) => frame,
        Err(e) => {
            warn!(node_id, peer_id, %remote, error = %e, "cannot encode accept");
            return;
        }
    };
    match tokio::time::timeout(shared.handshake_timeout, writer.send(accept)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            debug!(node_id, peer_id, %remote, error = %e, "sending accept failed");
            return;
        }
        Err(_) => {
            debug!(node_id, peer_id, %remote, "sending accept timed out");
            return;
        }
    }
    reader
        .decoder_mut()
        .set_max_frame_length(shared.max_frame_bytes);
    debug!(node_id, peer_id, %remote, "accepted inbound connection");
    shared.peer_connected(peer_id);
    let established = shared.admission.establish(pending, peer_id);
    if !address.is_empty() && address.len() <= MAX_ADVERTISED_LEN {
        // Picked up by the transport on its next send: a node can answer
        // whoever talks to it, even before the configuration names it.
        shared.learn(peer_id, address);
    }

    let traffic = shared.traffic_of(peer_id);
    loop {
        let frame = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = established.replaced.cancelled() => {
                debug!(node_id, peer_id, %remote, "inbound connection replaced by a newer one from the same peer");
                return;
            }
            frame = reader.next() => frame,
        };
        let frame = match frame {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                // Oversized length prefix, or EOF in the middle of a frame.
                warn!(node_id, peer_id, %remote, error = %e, "closing inbound connection: bad frame");
                return;
            }
            None => {
                debug!(node_id, peer_id, %remote, "inbound connection closed by peer");
                return;
            }
        };
        traffic
            .received
            .fetch_add(frame.len() as u64 + FRAME_PREFIX, Ordering::Relaxed);
        let envelope = match decode_envelope(&frame) {
            Ok(envelope) => envelope,
            Err(e) => {
                // After a bad frame we can no longer trust the stream.
                warn!(node_id, peer_id, %remote, error = %e, "closing inbound connection: undecodable message");
                return;
            }
        };
        if envelope.from != peer_id {
            warn!(
                node_id,
                peer_id,
                %remote,
                from = envelope.from,
                "dropping message whose sender differs from the handshake"
            );
        } else if envelope.to != node_id {
            warn!(
                node_id,
                peer_id,
                %remote,
                to = envelope.to,
                "dropping message addressed to another node"
            );
        } else {
            (shared.deliver)(envelope);
        }
    }
}
