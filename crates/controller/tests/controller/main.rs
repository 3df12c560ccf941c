//! Integration tests of the controller's pure parts: the state machine, the
//! audit records and the CustomResourceDefinitions.

mod audit;
mod crds;
mod decide;
mod helpers;
mod leader;
mod props;
mod reconcile;
