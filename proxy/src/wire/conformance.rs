//! Differential tests: messages encoded by pgwire (an independent
//! implementation of the protocol) must decode to the same fields with
//! qproxy's borrowed decoders. pgwire's own decoders allocate a `String` or
//! `Vec` per field, which is why the relay does not use them on the
//! forwarding path (see the README); here they serve as the reference.

use bytes::{Bytes, BytesMut};
use pgwire::messages::extendedquery::{Bind, Close, Describe, Execute, Parse};
use pgwire::messages::response::{
    CommandComplete, ErrorResponse, ReadyForQuery, TransactionStatus,
};
use pgwire::messages::simplequery::Query;
use pgwire::messages::startup::{BackendKeyData, ParameterStatus, SecretKey};
use pgwire::messages::Message;
use proptest::prelude::*;

use super::{backend, frontend};

fn encode(m: &impl Message) -> Vec<u8> {
    let mut buf = BytesMut::new();
    m.encode(&mut buf).expect("pgwire encodes");
    buf.to_vec()
}

fn name() -> impl Strategy<Value = Option<String>> {
    proptest::option::of("[a-z_0-9]{1,20}")
}

fn text() -> impl Strategy<Value = String> {
    // Any text without NUL, which the protocol cannot carry in a string.
    "[^\u{0}]{0,200}"
}

proptest! {
    #[test]
    fn query_and_parse(sql in text(), n in name(), oids in proptest::collection::vec(any::<u32>(), 0..5)) {
        let q = encode(&Query::new(sql.clone()));
        prop_assert_eq!(frontend::query(&q).unwrap(), sql.as_str());
        let p = encode(&Parse::new(n.clone(), sql.clone(), oids));
        let got = frontend::Parse::decode(&p).unwrap();
        prop_assert_eq!(got.name.as_ref(), n.as_deref().unwrap_or(""));
        prop_assert_eq!(got.query.as_ref(), sql.as_str());
    }

    #[test]
    fn bind(
        portal in name(),
        stmt in name(),
        formats in proptest::collection::vec(0i16..2, 0..4),
        params in proptest::collection::vec(proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)), 0..8),
        results in proptest::collection::vec(0i16..2, 0..4),
    ) {
        let msg = encode(&Bind::new(
            portal.clone(),
            stmt.clone(),
            formats.clone(),
            params.iter().map(|p| p.clone().map(Bytes::from)).collect(),
            results.clone(),
        ));
        let got = frontend::Bind::decode(&msg).unwrap();
        prop_assert_eq!(got.portal.as_ref(), portal.as_deref().unwrap_or(""));
        prop_assert_eq!(got.statement.as_ref(), stmt.as_deref().unwrap_or(""));
        let values: Vec<Option<Vec<u8>>> = got.params().map(|v| v.map(<[u8]>::to_vec)).collect();
        prop_assert_eq!(values, params.clone());
        for i in 0..params.len() {
            let expected = match formats.len() {
                0 => false,
                1 => formats[0] == 1,
                _ => formats.get(i).copied() == Some(1),
            };
            prop_assert_eq!(got.param_is_binary(i), expected);
        }
        prop_assert_eq!(got.result_formats.len(), results.len() * 2);
    }

    #[test]
    fn execute_close_describe(portal in name(), max_rows in any::<i32>(), statement in any::<bool>()) {
        let e = encode(&Execute::new(portal.clone(), max_rows));
        let got = frontend::Execute::decode(&e).unwrap();
        prop_assert_eq!(got.portal.as_ref(), portal.as_deref().unwrap_or(""));
        prop_assert_eq!(got.max_rows, max_rows);
        let target = if statement { b'S' } else { b'P' };
        let expected = if statement { frontend::Target::Statement } else { frontend::Target::Portal };
        for msg in [
            encode(&Close::new(target, portal.clone())),
            encode(&Describe::new(target, portal.clone())),
        ] {
            let got = frontend::TargetRef::decode(&msg).unwrap();
            prop_assert_eq!(got.target, expected);
            prop_assert_eq!(got.name.as_ref(), portal.as_deref().unwrap_or(""));
        }
    }

    #[test]
    fn backend_messages(tag in text(), key in text(), value in text(), pid in any::<i32>(), secret in any::<i32>()) {
        let cc = encode(&CommandComplete::new(tag.clone()));
        prop_assert_eq!(backend::command_tag(&cc).unwrap(), tag.as_str());
        let ps = encode(&ParameterStatus::new(key.clone(), value.clone()));
        let (k, v) = backend::parameter_status(&ps).unwrap();
        prop_assert_eq!((k.as_ref(), v.as_ref()), (key.as_str(), value.as_str()));
        let kd = encode(&BackendKeyData::new(pid, SecretKey::I32(secret)));
        prop_assert_eq!(backend::backend_key_data(&kd).unwrap(), (pid, &secret.to_be_bytes()[..]));
        let err = encode(&ErrorResponse::new(vec![(b'S', "ERROR".into()), (b'C', "42P01".into()), (b'M', value.clone())]));
        let fields = backend::ErrorFields::decode(&err).unwrap();
        prop_assert_eq!(fields.sqlstate(), Some(*b"42P01"));
        prop_assert_eq!(fields.field(b'M'), Some(value.as_bytes()));
    }
}

#[test]
fn ready_for_query_statuses() {
    for (status, byte) in [
        (TransactionStatus::Idle, b'I'),
        (TransactionStatus::Transaction, b'T'),
        (TransactionStatus::Error, b'E'),
    ] {
        assert_eq!(
            backend::ready_status(&encode(&ReadyForQuery::new(status))).unwrap(),
            byte
        );
    }
}
