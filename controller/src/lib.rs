//! The modelmesh Kubernetes controller: custom resources, the pure decisions over them
//! (registrations, placement labels, status mapping), and their reconcilers.

pub mod crd;
pub mod isvc;
pub mod labels;
pub mod registration;
pub mod status;
