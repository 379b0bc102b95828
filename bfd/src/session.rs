//! One BFD session in asynchronous mode (RFC 5880 section 6), sans-IO: packets and expired
//! timers go in as [`Input`]s, packets to send, timers to (re)start and state changes come out
//! as [`Output`]s, in the order the driver must carry them out. Time never passes inside.
//!
//! | state     | on                                   | does                                  | next      |
//! |-----------|--------------------------------------|---------------------------------------|-----------|
//! | Down      | packet, remote Down                  | send at once                          | Init      |
//! | Down      | packet, remote Init                  | send at once                          | Up        |
//! | Init      | packet, remote Init or Up            | send at once                          | Up        |
//! | Up        | packet, remote Down                  | diag 3 (neighbor signaled down)       | Down      |
//! | Init, Up  | packet, remote AdminDown             | diag 3                                | Down      |
//! | Init, Up  | Detect expires                       | diag 1 (detection time expired), forget the remote discriminator | Down |
//! | any       | AdminDown                            | diag 7, keep sending AdminDown        | AdminDown |
//! | AdminDown | AdminUp                              | diag cleared                          | Down      |
//!
//! Timers (6.8.2-6.8.4, 6.8.7): packets go every max(DesiredMinTx, the peer's RequiredMinRx),
//! less 0-25 % jitter (10-25 % with a detect multiplier of 1), and DesiredMinTx is at least 1 s
//! whenever the session is not Up. The detection time is the peer's detect multiplier times
//! max(our RequiredMinRx, the peer's DesiredMinTx), restarted by every packet accepted. A change
//! of either interval while Up (going Up included, when the configured rate is faster than the
//! 1 s used until then) runs a poll sequence: packets carry P until one with F comes back; until
//! then a slower transmit rate and a shorter detection time are not used, so neither side can
//! declare the other dead during the change. A packet with P is answered at once with F.

use std::time::Duration;

use crate::packet::{ControlPacket, Diagnostic, State};

/// RFC 5880 6.8.3: the transmit interval while the session is not Up.
pub const SLOW_TX: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// bfd.LocalDiscr: nonzero, unique among the node's sessions (the driver chooses it).
    pub local_disc: u32,
    pub desired_min_tx: Duration,
    pub required_min_rx: Duration,
    pub detect_mult: u8,
    /// The C bit: set when forwarding survives a control-plane restart (RFC 5882 4.3.1).
    pub control_plane_independent: bool,
    /// Seeds the transmit jitter (any value; fixed seeds make simulations reproducible).
    pub jitter_seed: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timer {
    /// The next periodic packet.
    Transmit,
    /// No packet from the peer for a detection time.
    Detect,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// A packet that passed [`ControlPacket::decode`] and that the driver matched to this
    /// session (by Your Discriminator, or by address when that is 0).
    Received(ControlPacket),
    Timer(Timer),
    AdminDown,
    AdminUp,
    /// New intervals or multiplier (configuration changed).
    Configure {
        desired_min_tx: Duration,
        required_min_rx: Duration,
        detect_mult: u8,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Send(ControlPacket),
    /// Start or restart; a timer started again replaces its previous deadline.
    StartTimer {
        timer: Timer,
        after: Duration,
    },
    StopTimer(Timer),
    StateChanged {
        from: State,
        to: State,
        diag: Diagnostic,
    },
}

#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    state: State,
    remote_disc: u32,
    diag: Diagnostic,
    /// bfd.RemoteMinRxInterval; 1 µs until the peer says otherwise (6.8.1).
    remote_min_rx: Duration,
    remote_desired_min_tx: Duration,
    remote_detect_mult: u8,
    /// What our packets advertise.
    advertised_tx: Duration,
    advertised_rx: Duration,
    /// What our own timers use: lags the advertised values while a poll sequence runs.
    tx_in_effect: Duration,
    rx_in_effect: Duration,
    polling: bool,
    rng: u64,
}

impl Session {
    /// A session in Down, sending at the slow rate from the start.
    pub fn new(config: SessionConfig) -> (Session, Vec<Output>) {
        let advertised_tx = config.desired_min_tx.max(SLOW_TX);
        let mut s = Session {
            config,
            state: State::Down,
            remote_disc: 0,
            diag: Diagnostic::None,
            remote_min_rx: Duration::from_micros(1),
            remote_desired_min_tx: Duration::ZERO,
            remote_detect_mult: 0,
            advertised_tx,
            advertised_rx: config.required_min_rx,
            tx_in_effect: advertised_tx,
            rx_in_effect: config.required_min_rx,
            polling: false,
            rng: config.jitter_seed | 1,
        };
        let mut out = Vec::new();
        s.send_now(&mut out);
        (s, out)
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn diagnostic(&self) -> Diagnostic {
        self.diag
    }

    pub fn remote_disc(&self) -> u32 {
        self.remote_disc
    }

    pub fn polling(&self) -> bool {
        self.polling
    }

    /// The detection time in force: the peer's multiplier times max(our RequiredMinRx, its
    /// DesiredMinTx); `None` before the peer has said anything.
    pub fn detection_time(&self) -> Option<Duration> {
        (self.remote_detect_mult > 0).then(|| self.rx_in_effect.max(self.remote_desired_min_tx) * u32::from(self.remote_detect_mult))
    }

    pub fn handle(&mut self, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Received(p) => self.received(p, &mut out),
            Input::Timer(Timer::Transmit) => self.send_now(&mut out),
            Input::Timer(Timer::Detect) => {
                self.remote_disc = 0;
                if matches!(self.state, State::Init | State::Up) {
                    self.change(State::Down, Diagnostic::ControlDetectionTimeExpired, &mut out);
                }
            }
            Input::AdminDown => {
                if self.state != State::AdminDown {
                    out.push(Output::StopTimer(Timer::Detect));
                    self.change(State::AdminDown, Diagnostic::AdministrativelyDown, &mut out);
                }
            }
            Input::AdminUp => {
                if self.state == State::AdminDown {
                    self.change(State::Down, Diagnostic::None, &mut out);
                }
            }
            Input::Configure { desired_min_tx, required_min_rx, detect_mult } => {
                self.config.desired_min_tx = desired_min_tx;
                self.config.required_min_rx = required_min_rx;
                self.config.detect_mult = detect_mult.max(1);
                if self.set_intervals() {
                    self.send_now(&mut out);
                }
            }
        }
        out
    }

    fn received(&mut self, p: ControlPacket, out: &mut Vec<Output>) {
        // 6.8.6, the checks that need the session.
        if p.your_disc != 0 && p.your_disc != self.config.local_disc {
            return;
        }
        self.remote_disc = p.my_disc;
        self.remote_min_rx = Duration::from_micros(p.required_min_rx.into());
        self.remote_desired_min_tx = Duration::from_micros(p.desired_min_tx.into());
        self.remote_detect_mult = p.detect_mult;
        if p.fin && self.polling {
            self.polling = false;
            self.tx_in_effect = self.advertised_tx;
            self.rx_in_effect = self.advertised_rx;
        }
        if self.state == State::AdminDown {
            return;
        }
        if let Some(detect) = self.detection_time() {
            out.push(Output::StartTimer { timer: Timer::Detect, after: detect });
        }
        match (self.state, p.state) {
            (State::Init | State::Up, State::AdminDown) | (State::Up, State::Down) => {
                self.change(State::Down, Diagnostic::NeighborSignaledSessionDown, out)
            }
            (State::Down, State::Down) => self.change(State::Init, Diagnostic::None, out),
            (State::Down, State::Init) | (State::Init, State::Init | State::Up) => self.change(State::Up, Diagnostic::None, out),
            _ => {}
        }
        if p.poll {
            // Answered at once, outside the periodic schedule (6.8.7), without P of our own.
            out.push(Output::Send(self.packet(false, true)));
            // The peer may have lowered its RequiredMinRx (FRR does on going Up, from 1 s) and
            // shortens its detection time as soon as our F arrives: the next periodic packet
            // must follow the F within the new interval, not at the old, slower schedule.
            if !self.remote_min_rx.is_zero() {
                out.push(Output::StartTimer { timer: Timer::Transmit, after: self.next_interval() });
            }
        }
    }

    fn change(&mut self, to: State, diag: Diagnostic, out: &mut Vec<Output>) {
        let from = self.state;
        self.state = to;
        // bfd.LocalDiag: the reason for the most recent change of state (6.8.1).
        self.diag = diag;
        if to != State::Up {
            self.polling = false;
        }
        out.push(Output::StateChanged { from, to, diag });
        self.set_intervals();
        // The peer learns of the change now, not a slow interval later.
        self.send_now(out);
    }

    /// Brings the advertised intervals in line with the configuration and the state; a change
    /// while Up starts a poll sequence (true: the caller sends a packet with P now).
    fn set_intervals(&mut self) -> bool {
        let tx = if self.state == State::Up { self.config.desired_min_tx } else { self.config.desired_min_tx.max(SLOW_TX) };
        let rx = self.config.required_min_rx;
        if tx == self.advertised_tx && rx == self.advertised_rx {
            return false;
        }
        self.advertised_tx = tx;
        self.advertised_rx = rx;
        if self.state == State::Up {
            // Faster sending and a longer detection time are safe at once; the rest waits for F.
            self.tx_in_effect = self.tx_in_effect.min(tx);
            self.rx_in_effect = self.rx_in_effect.max(rx);
            self.polling = true;
            true
        } else {
            self.tx_in_effect = tx;
            self.rx_in_effect = rx;
            false
        }
    }

    fn packet(&self, poll: bool, fin: bool) -> ControlPacket {
        let micros = |d: Duration| u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
        ControlPacket {
            diag: self.diag,
            state: self.state,
            poll,
            fin,
            cpi: self.config.control_plane_independent,
            demand: false,
            detect_mult: self.config.detect_mult,
            my_disc: self.config.local_disc,
            your_disc: self.remote_disc,
            desired_min_tx: micros(self.advertised_tx),
            required_min_rx: micros(self.advertised_rx),
            required_min_echo_rx: 0,
        }
    }

    /// Sends a periodic packet now and schedules the next one. A peer whose RequiredMinRx is 0
    /// wants no periodic packets (6.8.7).
    fn send_now(&mut self, out: &mut Vec<Output>) {
        if self.remote_min_rx.is_zero() {
            out.push(Output::StopTimer(Timer::Transmit));
            return;
        }
        out.push(Output::Send(self.packet(self.polling, false)));
        out.push(Output::StartTimer { timer: Timer::Transmit, after: self.next_interval() });
    }

    /// max(DesiredMinTx, RemoteMinRx) less jitter: 0-25 %, or 10-25 % with a multiplier of 1.
    fn next_interval(&mut self) -> Duration {
        let base = self.tx_in_effect.max(self.remote_min_rx);
        // xorshift64: cheap, and reproducible from the seed.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let (lo, hi) = if self.config.detect_mult == 1 { (10, 25) } else { (0, 25) };
        let cut_permille = lo * 10 + self.rng % ((hi - lo) * 10 + 1);
        base - base.mul_f64(cut_permille as f64 / 1000.0)
    }
}
