//! The conformance suite, run against a real broker (tansu, via scripts/dev-broker): every
//! group but the per-job lease one (Kafka's lease is group membership), from the same test
//! bodies as SQLite.

mod support;

use std::sync::Arc;

use async_trait::async_trait;
use conveyor_conformance::{
    backend_conformance_tests, engine_conformance_tests, observe_conformance_tests, EngineHarness,
    EngineSite, Harness, Site,
};
use conveyor_core::{Backend, Engine};
use conveyor_kafka::{KafkaConfig, KafkaEngine};

struct KafkaHarness;

struct KafkaSite {
    config: KafkaConfig,
}

impl KafkaSite {
    async fn connect(&self) -> Arc<KafkaEngine> {
        Arc::new(
            KafkaEngine::connect(self.config.clone())
                .await
                .expect("connect to the test broker"),
        )
    }
}

#[async_trait]
impl EngineSite for KafkaSite {
    async fn engine(&self) -> Arc<dyn Engine> {
        self.connect().await
    }
}

#[async_trait]
impl Site for KafkaSite {
    async fn open(&self) -> Arc<dyn Backend> {
        self.connect().await
    }
}

#[async_trait]
impl EngineHarness for KafkaHarness {
    async fn engine_site(&self) -> Box<dyn EngineSite> {
        Box::new(KafkaSite {
            config: support::fresh_config(3),
        })
    }
}

#[async_trait]
impl Harness for KafkaHarness {
    async fn site(&self) -> Box<dyn Site> {
        Box::new(KafkaSite {
            config: support::fresh_config(3),
        })
    }
}

engine_conformance_tests!(KafkaHarness);
observe_conformance_tests!(KafkaHarness);
backend_conformance_tests!(KafkaHarness);
