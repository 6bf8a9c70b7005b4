//! The modelmesh Kubernetes controller: custom resources, the pure decisions over them
//! (registrations, placement labels, status mapping), and their reconcilers.

pub mod config;
pub mod crd;
pub mod deployment;
pub mod isvc;
pub mod labels;
pub mod leader;
pub mod mesh_client;
pub mod mesh_watch;
pub mod network_policy;
pub mod plan;
pub mod quantity;
pub mod reconcile;
pub mod registration;
pub mod run;
pub mod status;
pub mod validation;
