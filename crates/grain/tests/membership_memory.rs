//! The in-memory provider passes the membership conformance suite.

use std::time::Duration;

use grain::membership::InMemoryMembership;
use grain::membership::testkit::Harness;

const TTL: Duration = Duration::from_secs(2);

grain::membership_conformance_tests!(|| async { Harness::new(InMemoryMembership::new(TTL), TTL) });
