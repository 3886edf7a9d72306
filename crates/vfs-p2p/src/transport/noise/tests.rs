//! Handshake, refusal, record layer and interop with snow's own transport state.

use super::*;
use proptest::prelude::*;

fn keys() -> Arc<Keypair> {
    Arc::new(Keypair::generate().unwrap())
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn listen(server: &NoiseTcp, allow: &[PublicKey]) -> NoiseListener {
    server
        .listen(loopback(), Allowlist::new(allow.iter().copied()))
        .await
        .unwrap()
}

#[tokio::test]
async fn frames_flow_both_ways_after_handshake() {
    for suite in [Suite::AesGcm, Suite::ChaChaPoly] {
        let (sk, ck) = (keys(), keys());
        let server = NoiseTcp::new(sk.clone()).with_suite(suite);
        let client = NoiseTcp::new(ck.clone()).with_suite(suite);
        let mut l = listen(&server, &[ck.public()]).await;
        let addr = l.local_addr();
        let (c, s) = tokio::join!(client.connect(addr, sk.public()), l.accept());
        let (mut c, mut s) = (c.unwrap(), s.unwrap());
        assert_eq!(c.peer, sk.public());
        assert_eq!(s.peer, ck.public());
        let big = vec![0xabu8; MAX_FRAME];
        c.tx.push(&[b"hello", b" world"]).unwrap();
        c.tx.push(&[&big]).unwrap();
        c.tx.push(&[]).unwrap();
        c.tx.flush().await.unwrap();
        assert_eq!(&s.rx.recv().await.unwrap().unwrap()[..], b"hello world");
        assert_eq!(s.rx.recv().await.unwrap().unwrap(), big);
        assert_eq!(s.rx.recv().await.unwrap().unwrap().len(), 0);
        s.tx.push(&[b"back"]).unwrap();
        s.tx.shutdown().await.unwrap();
        assert_eq!(&c.rx.recv().await.unwrap().unwrap()[..], b"back");
        assert!(c.rx.recv().await.unwrap().is_none(), "clean close between frames");
        assert!(matches!(
            c.tx.push(&[&vec![0u8; MAX_FRAME + 1]]),
            Err(TransportError::FrameTooLarge(_))
        ));
    }
}

#[tokio::test]
async fn unknown_key_is_refused_during_the_handshake() {
    let (sk, allowed, stranger) = (keys(), keys(), keys());
    let server = NoiseTcp::new(sk.clone());
    let mut l = listen(&server, &[allowed.public()]).await;
    let addr = l.local_addr();
    let err = NoiseTcp::new(stranger.clone())
        .connect(addr, sk.public())
        .await
        .err()
        .unwrap();
    match &err {
        TransportError::Refused { ours } => assert_eq!(*ours, stranger.public()),
        other => panic!("expected a refusal, got {other}"),
    }
    assert!(err.to_string().contains("allowlist"));
    // The listener never hands out the refused link, and still serves the allowed peer.
    let friend = NoiseTcp::new(allowed.clone());
    let (c, s) = tokio::join!(friend.connect(addr, sk.public()), l.accept());
    assert_eq!(c.unwrap().peer, sk.public());
    assert_eq!(s.unwrap().peer, allowed.public());
}

#[tokio::test]
async fn refused_peer_is_not_read_from() {
    // The responder side alone: a refused initiator's later bytes are never read
    // (the responder returns before creating a receiving half).
    let (sk, stranger) = (keys(), keys());
    let server = NoiseTcp::new(sk.clone());
    let tcp = TcpListener::bind(loopback()).await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let client = NoiseTcp::new(stranger.clone());
    let connect = async {
        let stream = TcpStream::connect(addr).await.unwrap();
        client.handshake_initiator(stream, sk.public()).await
    };
    let respond = async {
        let (stream, _) = tcp.accept().await.unwrap();
        server.handshake_responder(stream, &Allowlist::default()).await
    };
    let (c, s) = tokio::join!(connect, respond);
    assert!(matches!(c, Err(TransportError::Refused { .. })));
    assert!(matches!(s, Err(HandshakeRefusal::NotAllowed { peer, .. }) if peer == stranger.public()));
}

#[tokio::test]
async fn pinned_key_mismatch_aborts_the_connect() {
    let (sk, ck, other) = (keys(), keys(), keys());
    let server = NoiseTcp::new(sk.clone());
    let l = listen(&server, &[ck.public()]).await;
    let err = NoiseTcp::new(ck)
        .connect(l.local_addr(), other.public())
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, TransportError::WrongPeer { expected, got } if expected == other.public() && got == sk.public())
    );
}

#[tokio::test]
async fn garbage_handshakes_do_not_stop_the_listener() {
    let (sk, ck) = (keys(), keys());
    let server = NoiseTcp::new(sk.clone()).with_handshake_timeout(Duration::from_millis(500));
    let mut l = listen(&server, &[ck.public()]).await;
    let addr = l.local_addr();
    for garbage in [&b"\xff\xffGET / HTTP/1.1\r\n\r\n"[..], b"\x00\x20short", b""] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(garbage).await.unwrap();
        drop(s);
    }
    // A silent connection that never finishes its handshake.
    let _silent = TcpStream::connect(addr).await.unwrap();
    let client = NoiseTcp::new(ck.clone());
    let (c, s) = tokio::join!(client.connect(addr, sk.public()), l.accept());
    assert!(c.is_ok() && s.is_ok());
}

#[tokio::test]
async fn tampered_record_closes_the_link() {
    let k = [3u8; 32];
    let mut sealer = Sealer::new(Suite::AesGcm, &k).unwrap();
    let mut opener = Sealer::new(Suite::AesGcm, &k).unwrap();
    let mut out = Vec::new();
    sealer.seal(&[b"payload"], &mut out).unwrap();
    out[4] ^= 1;
    let mut buf = BytesMut::from(&out[..]);
    assert!(matches!(opener.open(&mut buf), Err(TransportError::Decrypt)));
    // A replayed record fails too: the nonce moved on.
    let mut sealer = Sealer::new(Suite::AesGcm, &k).unwrap();
    let mut opener = Sealer::new(Suite::AesGcm, &k).unwrap();
    let mut out = Vec::new();
    sealer.seal(&[b"once"], &mut out).unwrap();
    let mut buf = BytesMut::from(&out[..]);
    assert!(opener.open(&mut buf).unwrap().is_some());
    let mut buf = BytesMut::from(&out[..]);
    assert!(matches!(opener.open(&mut buf), Err(TransportError::Decrypt)));
}

/// Our in-place records are standard Noise transport messages: snow's own transport
/// state opens what we seal, and we open what it seals.
#[test]
fn records_interoperate_with_snow_transport_state() {
    for suite in [Suite::AesGcm, Suite::ChaChaPoly] {
        let params: snow::params::NoiseParams = suite.protocol_name().parse().unwrap();
        let (ik, rk) = (Keypair::generate().unwrap(), Keypair::generate().unwrap());
        let mut i = snow::Builder::new(params.clone())
            .prologue(PROLOGUE)
            .unwrap()
            .local_private_key(ik.private_bytes())
            .unwrap()
            .build_initiator()
            .unwrap();
        let mut r = snow::Builder::new(params)
            .prologue(PROLOGUE)
            .unwrap()
            .local_private_key(rk.private_bytes())
            .unwrap()
            .build_responder()
            .unwrap();
        let (mut a, mut b) = ([0u8; 1024], [0u8; 1024]);
        let n = i.write_message(&[], &mut a).unwrap();
        r.read_message(&a[..n], &mut b).unwrap();
        let n = r.write_message(&[], &mut a).unwrap();
        i.read_message(&a[..n], &mut b).unwrap();
        let n = i.write_message(&[], &mut a).unwrap();
        r.read_message(&a[..n], &mut b).unwrap();
        assert_eq!(r.get_remote_static().unwrap(), ik.public().as_bytes());
        let (i_send, i_recv) = i.dangerously_get_raw_split();
        let mut ours = Sealer::new(suite, &i_send).unwrap();
        let mut ours_in = Sealer::new(suite, &i_recv).unwrap();
        let theirs = r.into_stateless_transport_mode().unwrap();
        for n in 0..3u64 {
            let mut rec = Vec::new();
            ours.seal(&[b"from us ", &n.to_le_bytes()], &mut rec).unwrap();
            let mut plain = [0u8; 64];
            let len = theirs.read_message(n, &rec[2..], &mut plain).unwrap();
            assert_eq!(&plain[..8], b"from us ");
            assert_eq!(len, 16);
            let mut sealed = vec![0u8; 64];
            let m = theirs.write_message(n, b"from snow", &mut sealed).unwrap();
            let mut buf = BytesMut::new();
            buf.extend_from_slice(&(m as u16).to_be_bytes());
            buf.extend_from_slice(&sealed[..m]);
            assert_eq!(&ours_in.open(&mut buf).unwrap().unwrap()[..], b"from snow");
        }
    }
}

proptest! {
    /// Decoder of the encrypted record stream: arbitrary bytes never panic.
    #[test]
    fn arbitrary_record_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        crate::fuzzing::noise_records(&data);
    }

    /// Arbitrary length prefixes and split points: whole records come out intact.
    #[test]
    fn records_survive_any_split(frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..8), cut in 1usize..500) {
        let mut s = Sealer::new(Suite::AesGcm, &[1; 32]).unwrap();
        let mut o = Sealer::new(Suite::AesGcm, &[1; 32]).unwrap();
        let mut wire = Vec::new();
        for f in &frames {
            s.seal(&[f], &mut wire).unwrap();
        }
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for piece in wire.chunks(cut) {
            buf.extend_from_slice(piece);
            while let Some(f) = o.open(&mut buf).unwrap() {
                got.push(f.to_vec());
            }
        }
        prop_assert_eq!(got, frames);
    }

    /// Decoder of handshake messages: arbitrary bytes never panic.
    #[test]
    fn arbitrary_handshake_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        crate::fuzzing::noise_handshake(&data);
    }
}
