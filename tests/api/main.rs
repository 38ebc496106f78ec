//! One test binary: the modules below, sharing `helpers`.

mod capture;
mod crash;
mod helpers;

mod access;
mod accounts;
mod authn;
mod bad_input;
mod foundation;
mod fuzz;
mod hardening;
mod mfa;
mod mlte_client;
mod oidc;
mod op;
mod op_clients;
mod operations;
mod pages;
mod permissions;
mod projects;
mod scaleout;
mod scim;
mod security;
mod tracker;
mod web_console;
mod xnat;
mod xnat_clients;
