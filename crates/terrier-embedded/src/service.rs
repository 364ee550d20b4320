//! The device's side of a stream: the firmware's local services. An `open`
//! names a service (`http` or a TCP service id); the agent asks the
//! [`Service`] for a byte stream to it and relays the visitor's bytes both
//! ways. The stream can be a socket to a server on the LAN, or an object that
//! answers in firmware (see [`crate::http::HttpService`]).

use embedded_io_async::{ErrorType, Read, Write};

/// A byte stream to a local service, with TCP's half-close.
pub trait LocalStream: Read + Write {
    /// The visitor sent everything it will send (an empty binary frame
    /// arrived): end this direction, like `shutdown(SHUT_WR)`. The default
    /// does nothing, which suits request/response handlers.
    async fn close_write(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// The firmware's local services.
pub trait Service {
    /// A stream to one service for one visitor.
    type Conn<'a>: LocalStream
    where
        Self: 'a;
    /// Why a service could not be opened; its `Display` text becomes the
    /// `refused` reason the visitor sees on the 502 page.
    type Error: core::fmt::Display;

    /// Opens the service named `service` (`http` or a TCP service id).
    async fn open<'a>(&'a self, service: &str) -> Result<Self::Conn<'a>, Self::Error>;
}

/// One of two stream types, for a [`Service`] whose services differ (an HTTP
/// handler in firmware and a TCP socket to the LAN).
pub enum Either<A, B> {
    /// The first kind.
    Left(A),
    /// The second kind.
    Right(B),
}

/// The error of an [`Either`] stream.
#[derive(Debug)]
pub enum EitherError<A, B> {
    /// From the first kind.
    Left(A),
    /// From the second kind.
    Right(B),
}

impl<A: embedded_io::Error, B: embedded_io::Error> embedded_io::Error for EitherError<A, B> {
    fn kind(&self) -> embedded_io::ErrorKind {
        match self {
            Self::Left(e) => e.kind(),
            Self::Right(e) => e.kind(),
        }
    }
}

impl<A: core::error::Error, B: core::error::Error> core::error::Error for EitherError<A, B> {}

impl<A: core::fmt::Display, B: core::fmt::Display> core::fmt::Display for EitherError<A, B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Left(e) => e.fmt(f),
            Self::Right(e) => e.fmt(f),
        }
    }
}

impl<A: ErrorType, B: ErrorType> ErrorType for Either<A, B> {
    type Error = EitherError<A::Error, B::Error>;
}

impl<A: Read, B: Read> Read for Either<A, B> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        match self {
            Self::Left(a) => a.read(buf).await.map_err(EitherError::Left),
            Self::Right(b) => b.read(buf).await.map_err(EitherError::Right),
        }
    }
}

impl<A: Write, B: Write> Write for Either<A, B> {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        match self {
            Self::Left(a) => a.write(buf).await.map_err(EitherError::Left),
            Self::Right(b) => b.write(buf).await.map_err(EitherError::Right),
        }
    }

    async fn flush(&mut self) -> Result<(), Self::Error> {
        match self {
            Self::Left(a) => a.flush().await.map_err(EitherError::Left),
            Self::Right(b) => b.flush().await.map_err(EitherError::Right),
        }
    }
}

impl<A: LocalStream, B: LocalStream> LocalStream for Either<A, B> {
    async fn close_write(&mut self) -> Result<(), Self::Error> {
        match self {
            Self::Left(a) => a.close_write().await.map_err(EitherError::Left),
            Self::Right(b) => b.close_write().await.map_err(EitherError::Right),
        }
    }
}
