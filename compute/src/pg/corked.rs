//! Answers to the extended query protocol leave in one write per Sync.
//!
//! pgwire's handlers for Parse, Bind, Describe, Execute and Close flush
//! the socket after each answer, so a prepared statement's
//! Bind/Describe/Execute/Sync round costs four `sendto` calls, and every
//! one wakes the proxy and the client. PostgreSQL writes nothing until
//! Sync or Flush (or until its output buffer fills). [`Corking`] runs a
//! handler's Parse, Bind, Describe, Execute and Close with a [`Corked`]
//! client, whose flush is deferred; Sync and Flush flush as before, and a
//! large result still streams (the socket's sink writes out when its buffer
//! passes its limit). A CopyIn or CopyBoth response is flushed at once: the
//! client answers it with data, not with Sync.

use std::collections::HashMap;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::portal::Portal;
use pgwire::api::query::ExtendedQueryHandler;
use pgwire::api::results::{DescribePortalResponse, DescribeStatementResponse, Response};
use pgwire::api::stmt::StoredStatement;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireConnectionState, SessionExtensions};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::extendedquery::{Bind, Close, Describe, Execute, Flush, Parse, Sync as PgSync};
use pgwire::messages::response::TransactionStatus;
use pgwire::messages::startup::SecretKey;
use pgwire::messages::{PgWireBackendMessage, ProtocolVersion};
use pgwire::tokio::tokio_rustls::rustls::pki_types::CertificateDer;

/// A client whose flushes wait for the next real one (Sync or Flush),
/// unless what it sent asks the client for data.
pub struct Corked<'a, C> {
    client: &'a mut C,
    awaits_client: bool,
}

impl<'a, C> Corked<'a, C> {
    /// Corks `client` for one handler call.
    pub fn new(client: &'a mut C) -> Self {
        Self { client, awaits_client: false }
    }
}

impl<C: Sink<PgWireBackendMessage> + Unpin> Sink<PgWireBackendMessage> for Corked<'_, C> {
    type Error = C::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The socket's sink writes its buffer out here once it is full.
        Pin::new(&mut *self.get_mut().client).poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: PgWireBackendMessage) -> Result<(), Self::Error> {
        let this = self.get_mut();
        if matches!(item, PgWireBackendMessage::CopyInResponse(_) | PgWireBackendMessage::CopyBothResponse(_)) {
            this.awaits_client = true;
        }
        Pin::new(&mut *this.client).start_send(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        if this.awaits_client { Pin::new(&mut *this.client).poll_flush(cx) } else { Poll::Ready(Ok(())) }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut *self.get_mut().client).poll_close(cx)
    }
}

impl<C: ClientInfo> ClientInfo for Corked<'_, C> {
    fn socket_addr(&self) -> SocketAddr {
        self.client.socket_addr()
    }
    fn is_secure(&self) -> bool {
        self.client.is_secure()
    }
    fn protocol_version(&self) -> ProtocolVersion {
        self.client.protocol_version()
    }
    fn set_protocol_version(&mut self, version: ProtocolVersion) {
        self.client.set_protocol_version(version)
    }
    fn pid_and_secret_key(&self) -> (i32, SecretKey) {
        self.client.pid_and_secret_key()
    }
    fn set_pid_and_secret_key(&mut self, pid: i32, secret_key: SecretKey) {
        self.client.set_pid_and_secret_key(pid, secret_key)
    }
    fn state(&self) -> PgWireConnectionState {
        self.client.state()
    }
    fn set_state(&mut self, new_state: PgWireConnectionState) {
        self.client.set_state(new_state)
    }
    fn transaction_status(&self) -> TransactionStatus {
        self.client.transaction_status()
    }
    fn set_transaction_status(&mut self, new_status: TransactionStatus) {
        self.client.set_transaction_status(new_status)
    }
    fn metadata(&self) -> &HashMap<String, String> {
        self.client.metadata()
    }
    fn metadata_mut(&mut self) -> &mut HashMap<String, String> {
        self.client.metadata_mut()
    }
    fn session_extensions(&self) -> &SessionExtensions {
        self.client.session_extensions()
    }
    fn sni_server_name(&self) -> Option<&str> {
        self.client.sni_server_name()
    }
    fn client_certificates<'a>(&self) -> Option<&[CertificateDer<'a>]> {
        self.client.client_certificates()
    }
}

impl<C: ClientPortalStore> ClientPortalStore for Corked<'_, C> {
    type PortalStore = C::PortalStore;

    fn portal_store(&self) -> &Self::PortalStore {
        self.client.portal_store()
    }
}

/// An extended-query handler `H` whose answers wait for Sync or Flush.
pub struct Corking<H>(pub Arc<H>);

#[async_trait]
impl<H: ExtendedQueryHandler> ExtendedQueryHandler for Corking<H> {
    type Statement = H::Statement;
    type QueryParser = H::QueryParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.0.query_parser()
    }

    async fn on_parse<C>(&self, client: &mut C, message: Parse) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.0.on_parse(&mut Corked::new(client), message).await
    }

    async fn on_bind<C>(&self, client: &mut C, message: Bind) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.0.on_bind(&mut Corked::new(client), message).await
    }

    async fn on_describe<C>(&self, client: &mut C, message: Describe) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.0.on_describe(&mut Corked::new(client), message).await
    }

    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.0.on_execute(&mut Corked::new(client), message).await
    }

    async fn on_close<C>(&self, client: &mut C, message: Close) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.0.on_close(&mut Corked::new(client), message).await
    }

    async fn on_flush<C>(&self, client: &mut C, message: Flush) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.0.on_flush(client, message).await
    }

    async fn on_sync<C>(&self, client: &mut C, message: PgSync) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.0.on_sync(client, message).await
    }

    async fn do_describe_statement<C>(&self, client: &mut C, target: &StoredStatement<Self::Statement>) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.0.do_describe_statement(client, target).await
    }

    async fn do_describe_portal<C>(&self, client: &mut C, target: &Portal<Self::Statement>) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.0.do_describe_portal(client, target).await
    }

    async fn do_query<C>(&self, client: &mut C, portal: &Portal<Self::Statement>, max_rows: usize) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.0.do_query(client, portal, max_rows).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::SinkExt;
    use pgwire::messages::copy::CopyInResponse;
    use pgwire::messages::extendedquery::BindComplete;

    /// Counts the messages it was given and the flushes that reached it.
    #[derive(Default)]
    struct Socket {
        messages: usize,
        flushes: usize,
    }

    impl Sink<PgWireBackendMessage> for Socket {
        type Error = PgWireError;
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), PgWireError>> {
            Poll::Ready(Ok(()))
        }
        fn start_send(self: Pin<&mut Self>, _: PgWireBackendMessage) -> Result<(), PgWireError> {
            self.get_mut().messages += 1;
            Ok(())
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), PgWireError>> {
            self.get_mut().flushes += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), PgWireError>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn answers_wait_for_sync_unless_the_client_must_send_data() {
        let mut socket = Socket::default();
        let mut corked = Corked::new(&mut socket);
        corked.send(PgWireBackendMessage::BindComplete(BindComplete::new())).await.expect("send");
        corked.send(PgWireBackendMessage::BindComplete(BindComplete::new())).await.expect("send");
        assert_eq!((socket.messages, socket.flushes), (2, 0), "written, not flushed");
        let mut corked = Corked::new(&mut socket);
        corked.send(PgWireBackendMessage::CopyInResponse(CopyInResponse::new(0, 0, vec![]))).await.expect("send");
        assert_eq!((socket.messages, socket.flushes), (3, 1), "COPY data cannot come before the client sees CopyInResponse");
    }
}
