//! Raspberry Pi Pico W firmware: the terrier LED demo on real hardware.
//!
//! The board joins Wi-Fi, connects out to a `terrierd` server and serves a
//! web page from its own handler (no HTTP server on the board): the page
//! shows the on-board LED and a button toggles it, from anywhere, through the
//! device's public subdomain. Settings are compile-time environment
//! variables (see README.md).
//!
//! RAM used by terrier: one control socket (2.8 KiB) and one data socket
//! (8.0 KiB) of buffers, plus the page's request/response buffers (3 KiB);
//! embassy-net's two TCP sockets add 2 × (2 + 2) KiB.
#![no_std]
#![no_main]

use core::net::{IpAddr, SocketAddr};
use core::sync::atomic::{AtomicBool, Ordering};

use cyw43_pio::{PioSpi, DEFAULT_CLOCK_DIVIDER};
use embassy_executor::Spawner;
use embassy_net::dns::DnsQueryType;
use embassy_net::tcp::client::{TcpClient, TcpClientState, TcpConnection};
use embassy_net::{IpAddress, Stack, StackResources};
use embassy_rp::clocks::RoscRng;
use embassy_rp::gpio::{Level, Output};
use embassy_rp::peripherals::{DMA_CH0, PIO0};
use embassy_rp::pio::{InterruptHandler, Pio};
use embassy_rp::{bind_interrupts, dma};
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::signal::Signal;
use embassy_time::{Instant, Timer};
use embedded_nal_async::TcpConnect;
use panic_halt as _;
use static_cell::{ConstStaticCell, StaticCell};
use terrier_embedded::buffers::{CONTROL_TOTAL, DATA_TOTAL};
use terrier_embedded::http::{Handler, HttpService, Request, Response};
use terrier_embedded::{Agent, Clock, Config, Connect, ControlBuffers, DataBuffers, Endpoint};

bind_interrupts!(struct Irqs {
    PIO0_IRQ_0 => InterruptHandler<PIO0>;
    DMA_IRQ_0 => dma::InterruptHandler<DMA_CH0>;
});

/// A compile-time setting with a default.
macro_rules! setting {
    ($name:literal, $default:literal) => {
        match option_env!($name) {
            Some(v) => v,
            None => $default,
        }
    };
}

const WIFI_SSID: &str = setting!("WIFI_SSID", "my-network");
const WIFI_PASSWORD: &str = setting!("WIFI_PASSWORD", "");
const SERVER: &str = setting!("TERRIER_SERVER", "tunnel.example.com");
const PORT: &str = setting!("TERRIER_PORT", "80");
const NAME: &str = setting!("TERRIER_NAME", "pico-led");
const TOKEN: &str = setting!("TERRIER_TOKEN", "");

/// Sockets embassy-net needs: DHCP, DNS, and our two TCP connections.
const SOCKETS: usize = 4;
/// Concurrent TCP connections to the server: one control, one data socket.
const CONNECTIONS: usize = 2;
/// embassy-net's own buffers per connection (TCP windows), each way.
const TCP_BUFFER: usize = 2048;

/// The LED state the page shows; the LED task makes the hardware follow it.
static LED_ON: AtomicBool = AtomicBool::new(false);
static LED_CHANGED: Signal<CriticalSectionRawMutex, bool> = Signal::new();

// Socket memory for terrier: statics, so it shows in `size` and never on a stack.
static CONTROL_BUF: ConstStaticCell<[u8; CONTROL_TOTAL]> = ConstStaticCell::new([0; CONTROL_TOTAL]);
static DATA_BUF: ConstStaticCell<[u8; DATA_TOTAL]> = ConstStaticCell::new([0; DATA_TOTAL]);

/// The page: LED state and a button, answered in firmware.
struct LedPage;

impl Handler for LedPage {
    fn handle(&self, req: &Request<'_>, resp: &mut Response<'_>) {
        use core::fmt::Write as _;
        match (req.method, req.path) {
            ("GET", "/") => {}
            ("POST", "/led") => {
                let on = req.body == b"state=on";
                LED_ON.store(on, Ordering::Relaxed);
                LED_CHANGED.signal(on);
            }
            _ => {
                resp.set_status(404);
                let _ = write!(resp, "not here");
                return;
            }
        }
        let (state, other) = if LED_ON.load(Ordering::Relaxed) { ("on", "off") } else { ("off", "on") };
        let _ = write!(
            resp,
            "<!doctype html><meta name=viewport content='width=device-width'><title>Pico W</title>\
             <h1>LED is {state}</h1><form method=post action=/led>\
             <button name=state value={other}>turn {other}</button></form>"
        );
    }
}

/// terrier's "connect to host:port" over embassy-net: DNS, then a pooled TCP socket.
struct Net {
    stack: Stack<'static>,
    client: TcpClient<'static, CONNECTIONS, TCP_BUFFER, TCP_BUFFER>,
}

/// Why `Net::connect` failed.
#[derive(Debug)]
enum NetError {
    NoTls,
    Dns,
    Tcp,
}

impl Connect for Net {
    type Conn<'a> = TcpConnection<'a, CONNECTIONS, TCP_BUFFER, TCP_BUFFER>;
    type Error = NetError;

    async fn connect<'a>(&'a self, to: &Endpoint) -> Result<Self::Conn<'a>, NetError> {
        if to.tls {
            // TLS (embedded-tls) is not wired in yet: use an http:// server.
            return Err(NetError::NoTls);
        }
        let addrs = self.stack.dns_query(&to.host, DnsQueryType::A).await.map_err(|_| NetError::Dns)?;
        let ip = match addrs.first().ok_or(NetError::Dns)? {
            IpAddress::Ipv4(v4) => IpAddr::V4(*v4),
        };
        self.client.connect(SocketAddr::new(ip, to.port)).await.map_err(|_| NetError::Tcp)
    }
}

/// embassy-time as terrier's clock.
struct EmbassyClock;

impl Clock for EmbassyClock {
    fn now_ms(&self) -> u64 {
        Instant::now().as_millis()
    }
    async fn sleep_ms(&self, ms: u64) {
        Timer::after_millis(ms).await
    }
}

#[embassy_executor::task]
async fn wifi_task(runner: cyw43::Runner<'static, cyw43::SpiBus<Output<'static>, PioSpi<'static, PIO0, 0>>>) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn net_task(mut runner: embassy_net::Runner<'static, cyw43::NetDriver<'static>>) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn led_task(mut control: cyw43::Control<'static>) -> ! {
    loop {
        let on = LED_CHANGED.wait().await;
        control.gpio_set(0, on).await;
    }
}

/// Blinks the on-board LED fast forever: no Wi-Fi firmware was built in.
async fn halt_missing_firmware(mut led: Output<'static>) -> ! {
    loop {
        led.toggle();
        Timer::after_millis(100).await;
    }
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let p = embassy_rp::init(Default::default());
    let mut rng = RoscRng;

    let fw = cyw43::aligned_bytes!(concat!(env!("OUT_DIR"), "/43439A0.bin"));
    let clm = cyw43::aligned_bytes!(concat!(env!("OUT_DIR"), "/43439A0_clm.bin"));
    let nvram = cyw43::aligned_bytes!(concat!(env!("OUT_DIR"), "/nvram_rp2040.bin"));
    if fw.is_empty() || nvram.is_empty() {
        // GPIO 25 is not the Pico W's LED (that one hangs off the Wi-Fi chip),
        // but an LED wired to GP25 shows this state on a bench.
        halt_missing_firmware(Output::new(p.PIN_25, Level::Low)).await;
    }

    // The CYW43439 Wi-Fi chip on its PIO SPI bus (pins fixed by the Pico W).
    let pwr = Output::new(p.PIN_23, Level::Low);
    let cs = Output::new(p.PIN_25, Level::High);
    let mut pio = Pio::new(p.PIO0, Irqs);
    let dma = dma::Channel::new(p.DMA_CH0, Irqs);
    let spi = PioSpi::new(&mut pio.common, pio.sm0, DEFAULT_CLOCK_DIVIDER, pio.irq0, cs, p.PIN_24, p.PIN_29, dma);
    static WIFI_STATE: StaticCell<cyw43::State> = StaticCell::new();
    let (net_device, mut control, runner) = cyw43::new(WIFI_STATE.init(cyw43::State::new()), pwr, spi, fw, nvram).await;
    spawner.spawn(wifi_task(runner).expect("wifi task"));
    control.init(clm).await;
    control.set_power_management(cyw43::PowerManagementMode::PowerSave).await;

    static RESOURCES: StaticCell<StackResources<SOCKETS>> = StaticCell::new();
    let config = embassy_net::Config::dhcpv4(Default::default());
    let (stack, net_runner) = embassy_net::new(net_device, config, RESOURCES.init(StackResources::new()), rng.next_u64());
    spawner.spawn(net_task(net_runner).expect("net task"));

    let options = if WIFI_PASSWORD.is_empty() {
        cyw43::JoinOptions::new_open()
    } else {
        cyw43::JoinOptions::new(WIFI_PASSWORD.as_bytes())
    };
    while control.join(WIFI_SSID, options.clone()).await.is_err() {
        Timer::after_millis(1000).await;
    }
    stack.wait_config_up().await;
    spawner.spawn(led_task(control).expect("led task"));

    // terrier: one control socket and one data socket.
    static TCP_STATE: ConstStaticCell<TcpClientState<CONNECTIONS, TCP_BUFFER, TCP_BUFFER>> =
        ConstStaticCell::new(TcpClientState::new());
    let net = Net { stack, client: TcpClient::new(stack, TCP_STATE.take()) };
    let server = Endpoint::new(SERVER, PORT.parse().unwrap_or(80), false).expect("server host fits");
    let mut config = Config::new(server, NAME);
    config.http = true;
    config.platform = "rp2040";
    config.token = (!TOKEN.is_empty()).then_some(TOKEN);
    let page = HttpService::<LedPage, 1024, 2048>::new(LedPage);
    let Ok(agent) = Agent::new(config, net, page, EmbassyClock, ()) else {
        // TERRIER_NAME breaks the name rules: nothing can work.
        loop {
            Timer::after_secs(3600).await;
        }
    };
    let control_bufs = ControlBuffers::split(CONTROL_BUF.take()).expect("control buffers");
    let data_bufs = DataBuffers::split(DATA_BUF.take()).expect("data buffers");
    // Returns only when the server answers 400 (bad name or services).
    let _fatal = agent.run(control_bufs, data_bufs, RoscRng, RoscRng).await;
    loop {
        Timer::after_secs(3600).await;
    }
}
