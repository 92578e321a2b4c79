//! The outbound side: one task per peer that dials (with backoff),
//! performs the handshake and pumps queued envelopes into the connection.

// The transport's shared state, constants and imports.
use super::*;

pub(super) struct Outbound {
    reader: FramedRead<ReadHalf, LengthDelimitedCodec>,
    writer: FramedWrite<WriteHalf, LengthDelimitedCodec>,
}

pub(super) enum DialError {
    /// The peer answered but will not talk to us (or is not who we expected).
    Refused(String),
    /// Network or protocol failure.
    Failed(String),
}

pub(super) async fn run_peer(
    shared: Arc<Shared>,
    peer_id: NodeId,
    mut queue: mpsc::Receiver<Envelope>,
    mut address: watch::Receiver<String>,
) {
    let node_id = shared.node_id;
    let peer_up = shared.peer_up_signal(peer_id);
    let mut backoff = shared.backoff_min;
    // The last problem logged at warn: a peer that stays down or keeps
    // refusing is reported once, not at every attempt.
    let mut last_problem: Option<String> = None;
    loop {
        let addr = address.borrow_and_update().clone();
        let dialed = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            changed = address.changed() => {
                if changed.is_err() {
                    return;
                }
                // Abandon a dial to the old address that may hang until
                // IO_TIMEOUT.
                continue;
            }
            dialed = dial(&shared, peer_id, &addr) => dialed,
        };
        match dialed {
            Ok(conn) => {
                info!(node_id, peer_id, address = %addr, "connected to peer");
                last_problem = None;
                backoff = shared.backoff_min;
                let reason = tokio::select! {
                    _ = shared.cancel.cancelled() => return,
                    changed = address.changed() => match changed {
                        Ok(()) => None,
                        Err(_) => return,
                    },
                    ended = pump(&shared, peer_id, conn, &mut queue) => match ended {
                        Some(reason) => Some(reason),
                        None => return,
                    },
                };
                match reason {
                    // New address: dial it right away.
                    None => continue,
                    // A peer shutting down closes its connections: not
                    // worth a warning by itself. If it stays away, the
                    // failed redial below warns.
                    Some(Lost::Closed) => {
                        info!(node_id, peer_id, address = %addr, "peer closed the connection; reconnecting");
                    }
                    Some(Lost::Failed(reason)) => {
                        warn!(node_id, peer_id, address = %addr, %reason, "connection to peer lost; reconnecting");
                    }
                }
            }
            Err(DialError::Refused(reason)) => {
                if last_problem.as_deref() != Some(reason.as_str()) {
                    warn!(
                        node_id,
                        peer_id,
                        address = %addr,
                        local_cluster_id = %shared.cluster_id,
                        local_version = PROTOCOL_VERSION,
                        %reason,
                        "peer refused the connection; will keep retrying"
                    );
                    last_problem = Some(reason);
                } else {
                    debug!(node_id, peer_id, address = %addr, %reason, "peer refused the connection again");
                }
            }
            Err(DialError::Failed(reason)) => {
                if last_problem.as_deref() != Some(reason.as_str()) {
                    warn!(node_id, peer_id, address = %addr, %reason, "cannot connect to peer; will keep retrying");
                    last_problem = Some(reason);
                } else {
                    debug!(node_id, peer_id, address = %addr, %reason, "cannot connect to peer");
                }
            }
        }
        let delay = jitter(backoff);
        backoff = backoff.saturating_mul(2).min(shared.backoff_max);
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
            () = peer_up.notified() => {
                debug!(node_id, peer_id, "peer connected to us: dialing it now");
                backoff = shared.backoff_min;
            }
            changed = address.changed() => {
                if changed.is_err() {
                    return;
                }
                // A reconfigured peer deserves a fresh start.
                backoff = shared.backoff_min;
                last_problem = None;
            }
        }
    }
}

pub(super) async fn dial(
    shared: &Shared,
    peer_id: NodeId,
    addr: &str,
) -> Result<Outbound, DialError> {
    let failed = |what: &str, e: &dyn fmt::Display| DialError::Failed(format!("{what}: {e}"));
    let stream = match tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(failed("connect failed", &e)),
        Err(_) => return Err(DialError::Failed("connect timed out".into())),
    };
    // Raft messages are small and latency-bound.
    let _ = stream.set_nodelay(true);
    let (read, write) = shared.dial_halves(peer_id, stream).await?;
    // The acceptor only ever sends one handshake frame.
    let mut reader = FramedRead::new(read, codec(HANDSHAKE_MAX_FRAME));
    let mut writer = FramedWrite::new(write, codec(shared.max_frame_bytes));
    let hello = encode_handshake(&Handshake::Hello {
        version: PROTOCOL_VERSION,
        cluster_id: shared.cluster_id.clone(),
        node_id: shared.node_id,
        address: shared.advertise.clone(),
    })
    .map_err(|e| failed("cannot encode hello", &e))?;
    match tokio::time::timeout(IO_TIMEOUT, writer.send(hello)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(failed("sending hello failed", &e)),
        Err(_) => return Err(DialError::Failed("sending hello timed out".into())),
    }
    let frame = match tokio::time::timeout(IO_TIMEOUT, reader.next()).await {
        Ok(Some(Ok(frame))) => frame,
        Ok(Some(Err(e))) => return Err(failed("reading handshake reply failed", &e)),
        Ok(None) => return Err(DialError::Failed("peer closed during handshake".into())),
        Err(_) => return Err(DialError::Failed("handshake reply timed out".into())),
    };
    match decode_handshake(&frame) {
        Ok(Handshake::Accept { node_id }) if node_id == peer_id => Ok(Outbound { reader, writer }),
        Ok(Handshake::Accept { node_id }) => Err(DialError::Refused(format!(
            "node id mismatch: expected node {peer_id} at {addr}, found node {node_id}"
        ))),
        Ok(Handshake::Refuse { reason }) => Err(DialError::Refused(shorten(&reason))),
        Ok(Handshake::Hello { .. }) => Err(DialError::Failed(
            "peer answered with a hello instead of accept/refuse".into(),
        )),
        Err(e) => Err(failed("undecodable handshake reply", &e)),
    }
}

/// Why a working connection ended.
pub(super) enum Lost {
    /// The peer closed it in order: it stopped or restarted, or replaced
    /// the connection. Expected whenever a peer shuts down.
    Closed,
    /// A read or write failed, or the peer broke the protocol.
    Failed(String),
}

/// Sends queued messages until the connection ends (`Some(why)`) or the
/// queue is closed because the transport is going away (`None`).
pub(super) async fn pump(
    shared: &Shared,
    peer_id: NodeId,
    mut conn: Outbound,
    queue: &mut mpsc::Receiver<Envelope>,
) -> Option<Lost> {
    let traffic = shared.traffic_of(peer_id);
    loop {
        tokio::select! {
            // Watching the read side notices a closed connection right away
            // instead of at the next write.
            frame = conn.reader.next() => {
                return Some(match frame {
                    None => Lost::Closed,
                    Some(Err(e)) => Lost::Failed(format!("read error: {e}")),
                    Some(Ok(_)) => Lost::Failed("unexpected frame from acceptor".to_owned()),
                });
            }
            first = queue.recv() => {
                let first = first?;
                let write = async {
                    let mut next = Some(first);
                    let mut written = 0;
                    while let Some(envelope) = next {
                        if let Some(frame) = encode_for_wire(shared, peer_id, &envelope) {
                            let size = frame.len() as u64 + FRAME_PREFIX;
                            conn.writer.feed(frame).await?;
                            traffic.sent.fetch_add(size, Ordering::Relaxed);
                        }
                        written += 1;
                        next = if written < MAX_BATCH { queue.try_recv().ok() } else { None };
                    }
                    // Spelled out because the codec also encodes `&[u8]`.
                    SinkExt::<Bytes>::flush(&mut conn.writer).await
                };
                match tokio::time::timeout(IO_TIMEOUT, write).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Some(Lost::Failed(format!("write error: {e}"))),
                    Err(_) => return Some(Lost::Failed("write timed out".to_owned())),
                }
            }
        }
    }
}

pub(super) fn encode_for_wire(
    shared: &Shared,
    peer_id: NodeId,
    envelope: &Envelope,
) -> Option<Bytes> {
    let node_id = shared.node_id;
    match encode_envelope(envelope) {
        Ok(frame) if frame.len() <= shared.max_frame_bytes => Some(frame),
        Ok(frame) => {
            warn!(
                node_id,
                peer_id,
                size = frame.len(),
                max = shared.max_frame_bytes,
                "dropping message larger than max_frame_bytes"
            );
            shared.count_drop();
            None
        }
        Err(e) => {
            warn!(node_id, peer_id, error = %e, "dropping message that cannot be encoded");
            shared.count_drop();
            None
        }
    }
}

// ---------------------------------------------------------------------------
// Inbound side: accept, handshake, then decode and deliver.
