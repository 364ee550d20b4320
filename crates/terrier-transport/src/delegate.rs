//! One `AsyncWrite` delegation for the stream wrappers that only change how
//! they read ([`crate::prefixed::Prefixed`], [`crate::capped::CappedReads`],
//! terrierd's TLS ClientHello recorder): they all pass writes, vectored
//! writes included, straight to the stream they wrap.

/// The body of an `impl AsyncWrite` that forwards every call to the
/// `Unpin` field `$inner`. Use inside
/// `impl<S: AsyncWrite + Unpin> AsyncWrite for Wrapper<S> { ... }`.
#[macro_export]
macro_rules! delegate_async_write {
    ($inner:ident) => {
        fn poll_write(
            self: ::std::pin::Pin<&mut Self>,
            cx: &mut ::std::task::Context<'_>,
            buf: &[u8],
        ) -> ::std::task::Poll<::std::io::Result<usize>> {
            ::std::pin::Pin::new(&mut self.get_mut().$inner).poll_write(cx, buf)
        }

        fn poll_write_vectored(
            self: ::std::pin::Pin<&mut Self>,
            cx: &mut ::std::task::Context<'_>,
            bufs: &[::std::io::IoSlice<'_>],
        ) -> ::std::task::Poll<::std::io::Result<usize>> {
            ::std::pin::Pin::new(&mut self.get_mut().$inner).poll_write_vectored(cx, bufs)
        }

        fn is_write_vectored(&self) -> bool {
            self.$inner.is_write_vectored()
        }

        fn poll_flush(
            self: ::std::pin::Pin<&mut Self>,
            cx: &mut ::std::task::Context<'_>,
        ) -> ::std::task::Poll<::std::io::Result<()>> {
            ::std::pin::Pin::new(&mut self.get_mut().$inner).poll_flush(cx)
        }

        fn poll_shutdown(
            self: ::std::pin::Pin<&mut Self>,
            cx: &mut ::std::task::Context<'_>,
        ) -> ::std::task::Poll<::std::io::Result<()>> {
            ::std::pin::Pin::new(&mut self.get_mut().$inner).poll_shutdown(cx)
        }
    };
}
