//! Property tests for the parsers registrar owns: whatever arrives, they
//! answer (never panic), and what they produce reads back the same.

use crate::store::users::Sort;
use proptest::prelude::*;

use crate::api::users::decode_cursor;
use crate::auth::principal::{parse_basic, Credentials};
use crate::auth::tokens::{new_api_key, parse_api_key};
use crate::domain::{Email, ProjectId, Username};
use crate::table::Table;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn basic_header_never_panics(raw in ".{0,300}") {
        let _ = parse_basic(&raw);
    }

    #[test]
    fn basic_header_round_trips(user in "[^:\\x00]{1,40}", pass in ".{0,80}") {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        match parse_basic(&b64) {
            Some(Credentials::Basic { username, password }) => {
                use secrecy::ExposeSecret;
                prop_assert_eq!(username, user);
                prop_assert_eq!(password.expose_secret(), pass.as_str());
            }
            _ => prop_assert!(false, "not parsed"),
        }
    }

    #[test]
    fn api_key_parser_never_panics(raw in ".{0,200}") {
        let _ = parse_api_key(&raw);
    }

    #[test]
    fn cursor_parser_never_panics(raw in ".{0,300}") {
        for sort in [Sort::Username, Sort::CreatedAt, Sort::LastLogin] {
            let _ = decode_cursor(&raw, sort);
            // Whatever a forged cursor says, a key it lets through is one the sort can compare.
            if let Ok((key, _)) = decode_cursor(&base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, format!("{}\n{raw}\n00000000-0000-0000-0000-000000000000", sort.name())), sort) {
                prop_assert!(sort.valid_key(&key));
            }
        }
    }

    #[test]
    fn identifiers_never_panic(raw in ".{0,300}") {
        let _ = Username::parse(&raw);
        let _ = Email::parse(&raw);
        let _ = ProjectId::parse(&raw);
    }

    #[test]
    fn valid_usernames_are_accepted(name in "[A-Za-z0-9][A-Za-z0-9._-]{0,63}") {
        prop_assume!(!name.eq_ignore_ascii_case("me"));
        prop_assume!(!crate::domain::RESERVED_USERNAMES.iter().any(|w| name.eq_ignore_ascii_case(w)));
        prop_assume!(!name.bytes().all(|b| b.is_ascii_digit()));
        prop_assert!(Username::parse(&name).is_ok());
    }

    #[test]
    fn csv_and_xml_carry_any_text(cells in proptest::collection::vec(".{0,40}", 1..6)) {
        let mut t = Table::new("t", &["a", "b", "c", "d", "e", "f"][..cells.len()]);
        t.push(cells.clone());
        let csv_text = t.csv().expect("csv");
        let mut rd = csv::Reader::from_reader(csv_text.as_bytes());
        let row = rd.records().next().expect("row").expect("valid csv");
        let back: Vec<String> = row.iter().map(String::from).collect();
        // Every cell comes back, with a `'` before what a spreadsheet would run.
        let expected: Vec<String> = cells.iter().map(|c| crate::table::csv_cell(c).into_owned()).collect();
        prop_assert_eq!(back, expected);
        for cell in row.iter() {
            prop_assert!(!cell.starts_with(['=', '+', '-', '@', '\t', '\r']), "formula cell {:?}", cell);
        }
        let xml = t.xml().expect("xml");
        let mut reader = quick_xml::Reader::from_str(&xml);
        loop {
            match reader.read_event() {
                Ok(quick_xml::events::Event::Eof) => break,
                Ok(_) => {}
                Err(e) => prop_assert!(false, "invalid XML: {e}"),
            }
        }
        prop_assert!(!t.html().contains("<script"));
    }
}

#[test]
fn api_keys_round_trip() {
    for _ in 0..100 {
        let (prefix, secret, full) = new_api_key();
        assert_eq!(parse_api_key(&full), Some((prefix.as_str(), secret.as_str())));
    }
}
