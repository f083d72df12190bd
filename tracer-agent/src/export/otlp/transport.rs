//! Sending one encoded `ExportTraceServiceRequest` to the collector: OTLP/gRPC through a tonic
//! channel (the message is already protobuf, so the codec only copies bytes) or OTLP/HTTP with
//! protobuf bodies through reqwest. Headers, gzip and the per-request timeout come from
//! [`OtlpConfig`]; the answer is sorted into success (with the spans a partial success rejected),
//! a failure worth retrying, and one that is not, by the OTLP specification's rules. With TLS,
//! both clients use the rustls configuration of [`super::tls`] (tonic through a hyper-rustls
//! connector asking for h2), and a refused handshake is a failure retrying cannot fix.

use std::{error::Error as _, time::Duration};

use bytes::{Buf as _, BufMut as _, Bytes};
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap},
    transport::Channel,
};

use super::{ExportError, proto, tls};
use crate::config::{OtlpCompression, OtlpConfig, OtlpProtocol};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const GRPC_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Why a request failed, and whether sending it again may help.
#[derive(Debug)]
pub enum SendError {
    /// The collector is away, overloaded or timed out: retry with backoff.
    Retryable(String),
    /// The collector refused the data (bad request, unauthenticated, ...): retrying cannot help.
    Permanent(String),
}

pub enum Transport {
    Grpc {
        client: tonic::client::Grpc<Channel>,
        metadata: MetadataMap,
        timeout: Duration,
    },
    Http {
        client: reqwest::Client,
        url: String,
        headers: reqwest::header::HeaderMap,
        gzip: bool,
        timeout: Duration,
    },
}

impl Transport {
    /// Prepares the client; nothing connects until the first request.
    pub fn new(config: &OtlpConfig) -> Result<Self, ExportError> {
        let endpoint = || config.endpoint.clone();
        Ok(match config.protocol {
            OtlpProtocol::Grpc => {
                let channel = Channel::from_shared(config.endpoint.clone())
                    .map_err(|e| ExportError::Endpoint(endpoint(), e.to_string()))?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .user_agent(concat!("tracer-agent/", env!("CARGO_PKG_VERSION")))
                    .map_err(|e| ExportError::Endpoint(endpoint(), e.to_string()))?;
                let channel = match &config.tls {
                    None => channel.connect_lazy(),
                    Some(tls) => {
                        let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
                        // The connector below refuses anything but https.
                        tcp.enforce_http(false);
                        tcp.set_nodelay(true);
                        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
                        let https = hyper_rustls::HttpsConnectorBuilder::new()
                            .with_tls_config((*tls.config).clone())
                            .https_only()
                            .enable_http2()
                            .wrap_connector(tcp);
                        channel.connect_with_connector_lazy(https)
                    }
                };
                let mut client = tonic::client::Grpc::new(channel);
                if config.compression == OtlpCompression::Gzip {
                    client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
                }
                let mut metadata = MetadataMap::new();
                for (k, v) in &config.headers {
                    let key = AsciiMetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                        .map_err(|_| ExportError::Header(k.clone()))?;
                    let value = AsciiMetadataValue::try_from(v.as_str())
                        .map_err(|_| ExportError::Header(k.clone()))?;
                    metadata.append(key, value);
                }
                Self::Grpc {
                    client,
                    metadata,
                    timeout: config.timeout,
                }
            }
            OtlpProtocol::HttpProtobuf => {
                use reqwest::header::{HeaderName, HeaderValue};
                let mut headers = reqwest::header::HeaderMap::new();
                for (k, v) in &config.headers {
                    let name = HeaderName::from_bytes(k.as_bytes())
                        .map_err(|_| ExportError::Header(k.clone()))?;
                    let value =
                        HeaderValue::from_str(v).map_err(|_| ExportError::Header(k.clone()))?;
                    headers.append(name, value);
                }
                let tls_config = config
                    .tls
                    .as_ref()
                    .map_or_else(tls::clear_text_config, |t| (*t.config).clone());
                let client = reqwest::Client::builder()
                    .user_agent(concat!("tracer-agent/", env!("CARGO_PKG_VERSION")))
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tls_backend_preconfigured(tls_config)
                    .https_only(config.tls.is_some())
                    .build()
                    .map_err(|e| ExportError::Endpoint(endpoint(), e.to_string()))?;
                Self::Http {
                    client,
                    url: config.endpoint.clone(),
                    headers,
                    gzip: config.compression == OtlpCompression::Gzip,
                    timeout: config.timeout,
                }
            }
        })
    }

    /// Sends one request; on success, how many spans the collector rejected anyway.
    pub async fn send(&mut self, body: Bytes) -> Result<i64, SendError> {
        match self {
            Self::Grpc {
                client,
                metadata,
                timeout,
            } => send_grpc(client, metadata, *timeout, body).await,
            Self::Http {
                client,
                url,
                headers,
                gzip,
                timeout,
            } => send_http(client, url, headers, *gzip, *timeout, body).await,
        }
    }
}

async fn send_grpc(
    client: &mut tonic::client::Grpc<Channel>,
    metadata: &MetadataMap,
    timeout: Duration,
    body: Bytes,
) -> Result<i64, SendError> {
    let call = async {
        if let Err(e) = client.ready().await {
            let mut status = Status::unavailable(format!("the channel is not ready: {e}"));
            status.set_source(std::sync::Arc::new(e));
            return Err(status);
        }
        let mut request = tonic::Request::new(body);
        *request.metadata_mut() = metadata.clone();
        request.set_timeout(timeout);
        client
            .unary(
                request,
                tonic::codegen::http::uri::PathAndQuery::from_static(GRPC_EXPORT),
                RawCodec,
            )
            .await
    };
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Err(SendError::Retryable(format!(
            "no answer within {timeout:?} (OTEL_EXPORTER_OTLP_TIMEOUT)"
        ))),
        Ok(Ok(response)) => Ok(proto::rejected_spans(response.get_ref())),
        Ok(Err(status)) => {
            use tonic::Code;
            if let Some(why) = tls::failure(&status) {
                return Err(SendError::Permanent(why));
            }
            let msg = tls::chain(
                &format!("gRPC status {:?}: {}", status.code(), status.message()),
                status.source(),
            );
            match status.code() {
                Code::Cancelled
                | Code::DeadlineExceeded
                | Code::ResourceExhausted
                | Code::Aborted
                | Code::OutOfRange
                | Code::Unavailable
                | Code::DataLoss => Err(SendError::Retryable(msg)),
                _ => Err(SendError::Permanent(msg)),
            }
        }
    }
}

async fn send_http(
    client: &reqwest::Client,
    url: &str,
    headers: &reqwest::header::HeaderMap,
    gzip: bool,
    timeout: Duration,
    body: Bytes,
) -> Result<i64, SendError> {
    use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE};
    let mut request = client
        .post(url)
        .headers(headers.clone())
        .header(CONTENT_TYPE, "application/x-protobuf")
        .timeout(timeout);
    request = if gzip {
        request
            .header(CONTENT_ENCODING, "gzip")
            .body(gzipped(&body))
    } else {
        request.body(body)
    };
    let response = request.send().await.map_err(|e| match tls::failure(&e) {
        Some(why) => SendError::Permanent(why),
        // Refused, reset or timed out: the collector may come back.
        None => SendError::Retryable(tls::chain(&e.to_string(), e.source())),
    })?;
    let status = response.status();
    let answer = response
        .bytes()
        .await
        .map_err(|e| SendError::Retryable(format!("reading the answer: {e}")))?;
    if status.is_success() {
        return Ok(proto::rejected_spans(&answer));
    }
    let msg = format!("HTTP {status}");
    match status.as_u16() {
        429 | 502 | 503 | 504 => Err(SendError::Retryable(msg)),
        _ => Err(SendError::Permanent(msg)),
    }
}

fn gzipped(body: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    enc.write_all(body).expect("writing to a Vec cannot fail");
    enc.finish().expect("writing to a Vec cannot fail")
}

/// A gRPC codec for messages that are already protobuf: bytes in, bytes out.
#[derive(Clone, Copy)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        *self
    }

    fn decoder(&mut self) -> Self {
        *self
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
