// RalphSerial.h: the board side of Ralph's serial line protocol, version 1.
//
// Ralph is an MQTT edge gateway. A board plugged into it over USB serial
// publishes and subscribes through it by writing text frames such as
//
//     $RPUB,2,1,0,temp,t,21.5*8DE5
//
// on the same link as its ordinary debug prints. The protocol is specified
// in serialin/PROTOCOL.md of the Ralph repository; serialin/line is the
// gateway's implementation, and a test (serialin/esp32/crosscheck_test.go)
// checks that the two agree byte for byte.
//
// This header implements that protocol for a board: the CRC, the field
// encodings, line assembly, the HELLO session, QoS 1 publishes kept until
// the gateway acknowledges them, subscriptions that are re-sent after every
// session start, MSG delivery without duplicates, and keepalive PINGs.
//
// It is header-only C++11 with no dependencies beyond <stdint.h>,
// <stddef.h> and <string.h>: no heap, no exceptions, no STL. All memory is
// inside the object, sized by template parameters (about 13 KiB with the
// defaults; make the object global or static, not a local on a small task
// stack). It is transport-agnostic: give it a write function, feed it the
// bytes you receive, and call loop() with the time in milliseconds. It is
// not thread-safe: call it from one task.
//
// Usage on an ESP32 with the Arduino core (the Stream& constructor and the
// argument-less loop() exist only when ARDUINO is defined):
//
//     #include <RalphSerial.h>
//     ralph::RalphSerial gateway(Serial);
//
//     void onMessage(const char* topic, const uint8_t* payload, size_t len,
//                    bool retain) {
//       // payload is also NUL-terminated, so text can be used as a C string
//     }
//
//     void setup() {
//       Serial.begin(115200);
//       gateway.onMessage(onMessage);
//       gateway.subscribe("cmd/#", 1);    // kept, and re-sent every session
//       gateway.begin("esp32-kitchen", "1.0.0");
//     }
//
//     void loop() {
//       gateway.loop();                   // reads Serial, runs the timers
//       if (timeToMeasure()) gateway.publishText("temp", "21.5", 1);
//     }
//
// Anywhere else (ESP-IDF, a host test), pass a write function instead:
//
//     size_t uartWrite(const uint8_t* p, size_t n, void* ctx);
//     ralph::RalphSerial gateway(uartWrite, nullptr);
//     ...
//     gateway.feed(rxBytes, rxCount);
//     gateway.loop(nowMs);
//
// Your own prints can share the line as long as each ends with a newline
// before the library writes a frame: a frame glued to the end of a log line
// is not a frame. The library writes a few log lines of its own ("ralph:
// session up on port kitchen", refusals, dropped frames); setLog(false)
// turns them off.

#ifndef RALPH_SERIAL_H
#define RALPH_SERIAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef ARDUINO
#include <Arduino.h>
#endif

namespace ralph {

static const int kProtocolVersion = 1;

// The gateway's max_line until its HELLO says otherwise.
static const size_t kDefaultPeerMaxLine = 4096;

// crc16 is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no
// final XOR). Bitwise rather than table-driven: frames are short, and 512
// bytes of table matter more on a small board than the cycles.
inline uint16_t crc16(const uint8_t* p, size_t n, uint16_t crc = 0xFFFF) {
  for (size_t i = 0; i < n; i++) {
    crc ^= static_cast<uint16_t>(p[i] << 8);
    for (int b = 0; b < 8; b++) {
      crc = (crc & 0x8000) ? static_cast<uint16_t>((crc << 1) ^ 0x1021)
                           : static_cast<uint16_t>(crc << 1);
    }
  }
  return crc;
}

inline bool needsEscape(uint8_t c) {
  return c < 0x20 || c > 0x7E || c == '%' || c == ',' || c == '*';
}

inline int hexValue(uint8_t c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

inline size_t base64EncodedLen(size_t n) { return (n + 2) / 3 * 4; }

// percentDecode decodes a topic or text field. out may be in itself (the
// output never overtakes the input), which is how received frames are
// decoded without a second buffer.
inline bool percentDecode(const char* in, size_t n, uint8_t* out, size_t* outLen) {
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    uint8_t c = static_cast<uint8_t>(in[i]);
    if (c == '%') {
      if (i + 2 >= n) return false;
      int hi = hexValue(static_cast<uint8_t>(in[i + 1]));
      int lo = hexValue(static_cast<uint8_t>(in[i + 2]));
      if (hi < 0 || lo < 0) return false;
      c = static_cast<uint8_t>(hi << 4 | lo);
      i += 2;
    }
    out[o++] = c;
  }
  *outLen = o;
  return true;
}

inline int base64Value(uint8_t c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

// base64Decode decodes standard base64 with padding (RFC 4648 section 4).
// out may be in itself: each quartet is read before its three bytes are
// written, and they land before the next quartet.
inline bool base64Decode(const char* in, size_t n, uint8_t* out, size_t* outLen) {
  if (n % 4 != 0) return false;
  size_t o = 0;
  for (size_t i = 0; i < n; i += 4) {
    int v[4];
    int pad = 0;
    for (int k = 0; k < 4; k++) {
      uint8_t c = static_cast<uint8_t>(in[i + k]);
      // Padding only at the very end, and only in the last two places.
      if (c == '=' && i + 4 == n && k >= 2 && (k == 3 || in[i + 3] == '=')) {
        v[k] = 0;
        pad++;
        continue;
      }
      if (pad > 0) return false;
      v[k] = base64Value(c);
      if (v[k] < 0) return false;
    }
    uint32_t q = static_cast<uint32_t>(v[0]) << 18 | static_cast<uint32_t>(v[1]) << 12 |
                 static_cast<uint32_t>(v[2]) << 6 | static_cast<uint32_t>(v[3]);
    out[o++] = static_cast<uint8_t>(q >> 16);
    if (pad < 2) out[o++] = static_cast<uint8_t>(q >> 8);
    if (pad < 1) out[o++] = static_cast<uint8_t>(q);
  }
  *outLen = o;
  return true;
}

// FrameBuilder writes a frame into a caller's buffer. Appends past the end
// are remembered rather than checked at every call site; finish() then
// refuses the frame.
class FrameBuilder {
 public:
  FrameBuilder(char* buf, size_t cap) : buf_(buf), cap_(cap), len_(0), ok_(true) {}

  void ch(char c) {
    if (len_ < cap_) {
      buf_[len_++] = c;
    } else {
      ok_ = false;
    }
  }
  void str(const char* s) {
    while (*s) ch(*s++);
  }
  void num(uint32_t v) {
    char d[10];
    int n = 0;
    do {
      d[n++] = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v);
    while (n) ch(d[--n]);
  }
  void text(const uint8_t* p, size_t n) {
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
      if (needsEscape(p[i])) {
        ch('%');
        ch(hex[p[i] >> 4]);
        ch(hex[p[i] & 15]);
      } else {
        ch(static_cast<char>(p[i]));
      }
    }
  }
  void base64(const uint8_t* p, size_t n) {
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
      uint32_t q = static_cast<uint32_t>(p[i]) << 16;
      if (i + 1 < n) q |= static_cast<uint32_t>(p[i + 1]) << 8;
      if (i + 2 < n) q |= p[i + 2];
      ch(abc[q >> 18 & 63]);
      ch(abc[q >> 12 & 63]);
      ch(i + 1 < n ? abc[q >> 6 & 63] : '=');
      ch(i + 2 < n ? abc[q & 63] : '=');
    }
  }
  // payload writes the encoding field and the payload, choosing as the
  // gateway does (text unless base64 is shorter), so both sides produce the
  // same bytes for the same message.
  void payload(const uint8_t* p, size_t n) {
    size_t escaped = 0;
    for (size_t i = 0; i < n; i++) escaped += needsEscape(p[i]);
    if (n + 2 * escaped <= base64EncodedLen(n)) {
      str("t,");
      text(p, n);
    } else {
      str("b,");
      base64(p, n);
    }
  }
  size_t len() const { return len_; }

  // finish appends "*CRC\n" and returns the frame's length with its "\n",
  // or 0 if it did not fit or is longer than maxLine without the "\n".
  size_t finish(size_t maxLine) {
    static const char hex[] = "0123456789ABCDEF";
    if (!ok_ || len_ < 2) return 0;
    uint16_t crc = crc16(reinterpret_cast<const uint8_t*>(buf_ + 1), len_ - 1);
    ch('*');
    ch(hex[crc >> 12]);
    ch(hex[crc >> 8 & 15]);
    ch(hex[crc >> 4 & 15]);
    ch(hex[crc & 15]);
    if (!ok_ || len_ > maxLine) return 0;
    ch('\n');
    return ok_ ? len_ : 0;
  }

 private:
  char* buf_;
  size_t cap_;
  size_t len_;
  bool ok_;
};

// Stats counts what the library dropped. The gateway never answers a
// damaged frame, so these are the only trace of a noisy link.
struct Stats {
  uint32_t badCrc;     // frames whose CRC did not match
  uint32_t malformed;  // right CRC, but a wrong verb or field
  uint32_t oversize;   // lines longer than MaxLine, discarded
  uint32_t resent;     // publishes, subscriptions and HELLOs sent again
};

// Client speaks the protocol over one link.
//
//   MaxLine       longest line received, without its line ending; also the
//                 longest frame sent. Told to the gateway in HELLO.
//   MaxPending    QoS 1 publishes awaiting ACK; each keeps its frame.
//   MaxSubs       subscriptions remembered for re-sending.
//   RememberedIds MSG ids remembered to recognise the gateway's resends.
//   MaxFilter     longest subscription filter.
template <size_t MaxLine = 1024, size_t MaxPending = 8, size_t MaxSubs = 16,
          size_t RememberedIds = 32, size_t MaxFilter = 128>
class Client {
  static_assert(MaxLine >= 64, "the protocol requires a max line of at least 64");
  static_assert(MaxLine <= 65535, "MaxLine must fit the HELLO field");
  static_assert(MaxPending >= 1 && MaxSubs >= 1 && RememberedIds >= 1, "tables need a slot");

 public:
  typedef size_t (*WriteFn)(const uint8_t* data, size_t len, void* ctx);
  // topic and payload point into the receive buffer: valid during the call.
  // The payload is followed by a NUL byte not counted in len.
  typedef void (*MessageFn)(const char* topic, const uint8_t* payload, size_t len, bool retain);
  typedef void (*AckFn)(uint16_t id);
  // reason is "denied", "full", "invalid" or "error" (or a later one).
  typedef void (*NakFn)(uint16_t id, const char* reason);

  Client(WriteFn write, void* ctx) : write_(write), ctx_(ctx) { init(); }

#ifdef ARDUINO
  explicit Client(Stream& stream) : write_(streamWrite), ctx_(&stream) {
    init();
    stream_ = &stream;
  }

  // loop reads what the stream has received, then runs the timers.
  void loop() {
    while (stream_ && stream_->available() > 0) {
      int c = stream_->read();
      if (c < 0) break;
      feed(static_cast<uint8_t>(c));
    }
    loop(static_cast<uint32_t>(millis()));
  }
#endif

  void onMessage(MessageFn f) { onMessage_ = f; }
  // onAck is called when the gateway has stored a QoS 1 publish.
  void onAck(AckFn f) { onAck_ = f; }
  // onNak is called when the gateway refused a publish, subscription or
  // unsubscription; the library has forgotten it.
  void onNak(NakFn f) { onNak_ = f; }

  // setLog turns the library's own human-readable lines ("ralph: ...",
  // written to the same link, where the gateway logs them) on or off.
  void setLog(bool on) { log_ = on; }
  void setResendInterval(uint32_t ms) { resendMs_ = ms; }
  void setKeepalive(uint32_t ms) { keepaliveMs_ = ms; }
  // setNextId sets the id the next QoS 1 publish or (un)subscription gets
  // (if free). Mostly for tests.
  void setNextId(uint16_t id) { nextId_ = id ? id : 1; }

  // begin starts a session: it sends HELLO. boardId and firmware are
  // copied (up to 47 bytes each). boot should differ at every boot of the
  // board: it tells the gateway whether a HELLO comes from a board that
  // restarted (and begins its ids again) or from the same run introducing
  // itself again. 0 picks esp_random() on an ESP32 under Arduino; without
  // one, the gateway takes every HELLO for a restart, which is safe but
  // may store a resent publish twice.
  void begin(const char* boardId, const char* firmware = "", uint32_t boot = 0) {
    copyStr(boardId_, sizeof boardId_, boardId);
    copyStr(firmware_, sizeof firmware_, firmware ? firmware : "");
#if defined(ARDUINO) && defined(ESP32)
    if (!boot) boot = esp_random();
#endif
    boot_ = boot;
    begun_ = true;
    sendHello();
  }

  // publish sends a PUB. A QoS 1 publish is kept, with its frame, until the
  // gateway ACKs or NAKs it, and resent unchanged every resend interval.
  // Returns false, sending nothing, when qos is not 0 or 1, the frame would
  // be too long, or (QoS 1) all MaxPending slots are waiting for an ACK.
  // For QoS 1, *id (if given) receives the id passed to onAck/onNak.
  bool publish(const char* topic, const uint8_t* payload, size_t len, uint8_t qos = 1,
               bool retain = false, uint16_t* id = 0) {
    if (!topic || qos > 1 || (!payload && len)) return false;
    if (qos == 0) {
      size_t n = buildPub(scratch_, 0, 0, retain, topic, payload, len);
      return n && send(scratch_, n);
    }
    Pending* slot = 0;
    for (size_t i = 0; i < MaxPending; i++) {
      if (!pending_[i].used) {
        slot = &pending_[i];
        break;
      }
    }
    if (!slot) return false;
    uint16_t pid = allocId();
    size_t n = buildPub(slot->frame, pid, 1, retain, topic, payload, len);
    if (!n) return false;
    slot->used = true;
    slot->id = pid;
    slot->len = n;
    slot->stamped = false;
    // A failed write is not a failed publish: the frame is kept and resent.
    send(slot->frame, n);
    if (id) *id = pid;
    return true;
  }

  // publishText publishes a NUL-terminated string. (Not an overload of
  // publish: publish(topic, charBuffer, n) would otherwise take n as QoS.)
  bool publishText(const char* topic, const char* text, uint8_t qos = 1, bool retain = false,
                   uint16_t* id = 0) {
    if (!text) return false;
    return publish(topic, reinterpret_cast<const uint8_t*>(text), strlen(text), qos, retain, id);
  }

  // subscribe registers a filter (relative to the port's topic prefix; "+"
  // and "#" allowed) and sends SUB once a session is up. Subscribing to a
  // registered filter again changes its QoS. Returns false if the filter is
  // empty or longer than MaxFilter, qos is not 0 or 1, or the table is full.
  bool subscribe(const char* filter, uint8_t qos = 1) {
    if (!filter || !*filter || strlen(filter) > MaxFilter || qos > 1) return false;
    Sub* s = findSub(filter);
    if (!s) {
      for (size_t i = 0; i < MaxSubs && !s; i++) {
        if (subs_[i].state == kFree) s = &subs_[i];
      }
      if (!s) return false;
      copyStr(s->filter, sizeof s->filter, filter);
    }
    s->qos = qos;
    s->state = kSubscribing;
    s->id = 0;
    if (sessionUp_) sendSub(s);
    return true;
  }

  // unsubscribe sends UNSUB for a registered filter and forgets it once the
  // gateway has answered. Returns false if the filter is not registered.
  bool unsubscribe(const char* filter) {
    Sub* s = filter ? findSub(filter) : 0;
    if (!s) return false;
    s->state = kUnsubscribing;
    s->id = 0;
    if (sessionUp_) sendSub(s);
    return true;
  }

  // feed passes received bytes to the library. Callbacks run from here.
  void feed(const uint8_t* data, size_t len) {
    for (size_t i = 0; i < len; i++) feed(data[i]);
  }

  void feed(uint8_t c) {
    if (c == '\n') {
      endLine();
      return;
    }
    if (rxSkip_) return;
    // Not "$R": the rest of the line is log output, not worth buffering.
    if (rxLen_ < 2 && c != "$R"[rxLen_]) {
      rxSkip_ = true;
      return;
    }
    // One byte over MaxLine may be the '\r' of a "\r\n".
    if (rxLen_ >= MaxLine + 1) {
      rxSkip_ = true;
      rxOver_ = true;
      return;
    }
    rx_[rxLen_++] = static_cast<char>(c);
  }

  // loop runs the timers: resends, the HELLO retry and keepalive PINGs.
  // Call it often with a millisecond clock (wrapping is fine).
  void loop(uint32_t now) {
    // Stamping here rather than when sending keeps the clock out of
    // publish() and subscribe(); the error is one loop iteration.
    for (size_t i = 0; i < MaxPending; i++) {
      Pending& p = pending_[i];
      if (!p.used) continue;
      if (!p.stamped) {
        p.stamped = true;
        p.sentAt = now;
      } else if (now - p.sentAt >= resendMs_) {
        stats_.resent++;
        send(p.frame, p.len);
        p.sentAt = now;
      }
    }
    for (size_t i = 0; i < MaxSubs; i++) {
      Sub& s = subs_[i];
      if (s.state != kSubscribing && s.state != kUnsubscribing) continue;
      if (s.id == 0) continue;  // not sent yet: waits for the session
      if (!s.stamped) {
        s.stamped = true;
        s.sentAt = now;
      } else if (now - s.sentAt >= resendMs_) {
        stats_.resent++;
        sendSub(&s, false);
        s.stamped = true;
        s.sentAt = now;
      }
    }
    if (waitingHello_) {
      if (!helloStamped_) {
        helloStamped_ = true;
        helloSentAt_ = now;
      } else if (now - helloSentAt_ >= keepaliveMs_) {
        // Our HELLO or its answer was lost. Two answers in flight end in
        // one extra exchange, never a loop.
        stats_.resent++;
        sendHello();
        helloStamped_ = true;
        helloSentAt_ = now;
      }
    }
    if (sentSinceLoop_) {
      sentSinceLoop_ = false;
      lastSentAt_ = now;
    } else if (begun_ && now - lastSentAt_ >= keepaliveMs_) {
      // The gateway marks a silent board offline; a PING is the cheapest
      // proof of life.
      sendFrame("PING");
      sentSinceLoop_ = false;
      lastSentAt_ = now;
    }
  }

  // sessionUp reports whether a HELLO exchange has completed.
  bool sessionUp() const { return sessionUp_; }
  // portName is the gateway's name for this port, from its HELLO.
  const char* portName() const { return portName_; }
  // pending is the number of QoS 1 publishes awaiting ACK.
  size_t pending() const {
    size_t n = 0;
    for (size_t i = 0; i < MaxPending; i++) n += pending_[i].used;
    return n;
  }
  const Stats& stats() const { return stats_; }

 private:
  enum { kFree, kSubscribing, kSubscribed, kUnsubscribing };
  enum { kMaxFields = 7 };  // the verb and MSG's six fields; later ones are ignored

  struct Pending {
    bool used;
    bool stamped;
    uint16_t id;
    uint32_t sentAt;
    size_t len;
    char frame[MaxLine + 1];
  };

  struct Sub {
    uint8_t state;
    uint8_t qos;
    bool stamped;
    uint16_t id;  // of the SUB or UNSUB in flight; 0 when none is
    uint32_t sentAt;
    char filter[MaxFilter + 1];
  };

  struct Field {
    char* p;
    size_t n;
    bool is(const char* s) const { return strlen(s) == n && memcmp(p, s, n) == 0; }
  };

  // init sets every other member; the tables are plain structs, cleared as
  // such.
  void init() {
#ifdef ARDUINO
    stream_ = 0;
#endif
    onMessage_ = 0;
    onAck_ = 0;
    onNak_ = 0;
    boardId_[0] = firmware_[0] = portName_[0] = 0;
    boot_ = 0;
    begun_ = waitingHello_ = helloStamped_ = sessionUp_ = false;
    helloSentAt_ = lastSentAt_ = 0;
    sentSinceLoop_ = broken_ = false;
    memset(pending_, 0, sizeof pending_);
    memset(subs_, 0, sizeof subs_);
    memset(acked_, 0, sizeof acked_);
    ackedNext_ = ackedCount_ = 0;
    rxLen_ = 0;
    rxSkip_ = rxOver_ = false;
    memset(&stats_, 0, sizeof stats_);
    log_ = true;
    resendMs_ = 2000;
    keepaliveMs_ = 10000;
    nextId_ = 1;
    peerMaxLine_ = kDefaultPeerMaxLine;
  }

#ifdef ARDUINO
  static size_t streamWrite(const uint8_t* p, size_t n, void* ctx) {
    return static_cast<Stream*>(ctx)->write(p, n);
  }
#endif

  static void copyStr(char* dst, size_t cap, const char* src) {
    size_t n = strlen(src);
    if (n >= cap) n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = 0;
  }

  size_t sendLimit() const { return peerMaxLine_ < MaxLine ? peerMaxLine_ : MaxLine; }

  // send writes a whole frame or log line. After a short write the gateway
  // holds half a line, so the next write starts with "\n" to end it: the
  // half frame then fails its CRC instead of swallowing the next frame.
  bool send(const char* p, size_t n) {
    if (!write_) return false;
    if (broken_) {
      const uint8_t nl = '\n';
      if (write_(&nl, 1, ctx_) != 1) return false;
      broken_ = false;
    }
    size_t done = 0;
    while (done < n) {
      size_t w = write_(reinterpret_cast<const uint8_t*>(p) + done, n - done, ctx_);
      if (w == 0 || w > n - done) {
        broken_ = done > 0 || w > 0;
        return false;
      }
      done += w;
    }
    sentSinceLoop_ = true;
    return true;
  }

  void sendFrame(const char* verb, uint32_t num = 0, bool withNum = false) {
    FrameBuilder b(scratch_, sizeof scratch_);
    b.str("$R");
    b.str(verb);
    if (withNum) {
      b.ch(',');
      b.num(num);
    }
    size_t n = b.finish(sendLimit());
    if (n) send(scratch_, n);
  }

  void sendHello() {
    FrameBuilder b(scratch_, sizeof scratch_);
    b.str("$RHELLO,");
    b.num(kProtocolVersion);
    b.ch(',');
    b.text(reinterpret_cast<const uint8_t*>(boardId_), strlen(boardId_));
    b.ch(',');
    b.text(reinterpret_cast<const uint8_t*>(firmware_), strlen(firmware_));
    b.ch(',');
    b.num(MaxLine);
    if (boot_) {
      b.ch(',');
      b.num(boot_);
    }
    size_t n = b.finish(sendLimit());
    waitingHello_ = true;
    helloStamped_ = false;
    if (n) send(scratch_, n);
  }

  size_t buildPub(char* buf, uint16_t id, uint8_t qos, bool retain, const char* topic,
                  const uint8_t* payload, size_t len) {
    FrameBuilder b(buf, MaxLine + 1);
    b.str("$RPUB,");
    b.num(id);
    b.ch(',');
    b.num(qos);
    b.ch(',');
    b.ch(retain ? '1' : '0');
    b.ch(',');
    b.text(reinterpret_cast<const uint8_t*>(topic), strlen(topic));
    b.ch(',');
    b.payload(payload, len);
    return b.finish(sendLimit());
  }

  // sendSub sends the SUB or UNSUB the entry's state calls for, with a new
  // id unless it is a resend.
  void sendSub(Sub* s, bool newId = true) {
    if (newId) s->id = allocId();
    s->stamped = false;
    FrameBuilder b(scratch_, sizeof scratch_);
    if (s->state == kUnsubscribing) {
      b.str("$RUNSUB,");
      b.num(s->id);
    } else {
      b.str("$RSUB,");
      b.num(s->id);
      b.ch(',');
      b.num(s->qos);
    }
    b.ch(',');
    b.text(reinterpret_cast<const uint8_t*>(s->filter), strlen(s->filter));
    size_t n = b.finish(sendLimit());
    if (n) send(scratch_, n);
  }

  Sub* findSub(const char* filter) {
    for (size_t i = 0; i < MaxSubs; i++) {
      if (subs_[i].state != kFree && strcmp(subs_[i].filter, filter) == 0) return &subs_[i];
    }
    return 0;
  }

  bool inFlight(uint16_t id) const {
    for (size_t i = 0; i < MaxPending; i++) {
      if (pending_[i].used && pending_[i].id == id) return true;
    }
    for (size_t i = 0; i < MaxSubs; i++) {
      if (subs_[i].state != kFree && subs_[i].id == id) return true;
    }
    return false;
  }

  // allocId hands out 1..65535, wrapping, skipping ids still waiting for an
  // answer so that an ACK can only mean one thing. At most
  // MaxPending + MaxSubs ids are in flight, so this ends quickly.
  uint16_t allocId() {
    for (;;) {
      uint16_t id = nextId_;
      nextId_ = static_cast<uint16_t>(nextId_ + 1);
      if (nextId_ == 0) nextId_ = 1;
      if (id != 0 && !inFlight(id)) return id;
    }
  }

  static char printable(char c) {
    uint8_t u = static_cast<uint8_t>(c);
    return u >= 0x20 && u <= 0x7E ? c : '?';
  }

  // logLine writes "ralph: <a><num><b><c>" if logging is on. b and c may
  // come from the gateway, so they are made printable: a log line must stay
  // one line. A line too long for the buffer is cut.
  void logLine(const char* a, const char* b = "", uint32_t num = 0, bool withNum = false,
               const char* c = "") {
    if (!log_) return;
    char buf[128];
    FrameBuilder lb(buf, sizeof buf - 1);
    lb.str("ralph: ");
    lb.str(a);
    if (withNum) lb.num(num);
    for (const char* s = b; *s; s++) lb.ch(printable(*s));
    for (const char* s = c; *s; s++) lb.ch(printable(*s));
    buf[lb.len()] = '\n';
    send(buf, lb.len() + 1);
  }

  void endLine() {
    if (rxOver_) {
      stats_.oversize++;
      logLine("dropped a received line over ", " bytes", MaxLine, true);
    } else if (!rxSkip_ && rxLen_ > 0) {
      size_t n = rxLen_;
      if (rx_[n - 1] == '\r') n--;
      if (n > MaxLine) {
        stats_.oversize++;
        logLine("dropped a received line over ", " bytes", MaxLine, true);
      } else {
        handleLine(rx_, n);
      }
    }
    rxLen_ = 0;
    rxSkip_ = false;
    rxOver_ = false;
  }

  void malformed(const char* what) {
    stats_.malformed++;
    logLine("dropped a malformed frame: ", what);
  }

  // handleLine checks and dispatches one line that starts with "$R".
  void handleLine(char* l, size_t n) {
    size_t star = n;
    for (size_t i = n; i-- > 2;) {
      if (l[i] == '*') {
        star = i;
        break;
      }
    }
    if (star == n || n - star != 5) return malformed("no *CRC at the end");
    uint16_t want = 0;
    for (size_t i = star + 1; i < n; i++) {
      int v = hexValue(static_cast<uint8_t>(l[i]));
      if (v < 0) return malformed("CRC is not 4 hex digits");
      want = static_cast<uint16_t>(want << 4 | v);
    }
    if (crc16(reinterpret_cast<const uint8_t*>(l + 1), star - 1) != want) {
      stats_.badCrc++;
      logLine("dropped a frame with a bad CRC");
      return;
    }
    for (size_t i = 1; i < star; i++) {
      uint8_t c = static_cast<uint8_t>(l[i]);  // char may be signed or not
      if (c < 0x20 || c > 0x7E) return malformed("byte outside 0x20-0x7E");
    }
    Field f[kMaxFields];
    size_t nf = 0;
    char* p = l + 2;
    char* end = l + star;
    for (;;) {
      char* q = p;
      while (q < end && *q != ',') q++;
      // Fields after the ones a verb knows are ignored, so keep only as
      // many as the longest verb has.
      if (nf < kMaxFields) {
        f[nf].p = p;
        f[nf].n = static_cast<size_t>(q - p);
        nf++;
      }
      if (q == end) break;
      p = q + 1;
    }
    if (f[0].n == 0) return malformed("no verb");
    dispatch(f, nf - 1);
  }

  // parseNum reads a decimal number without sign or leading zeros.
  static bool parseNum(const Field& f, uint32_t max, uint32_t* out) {
    if (f.n == 0 || f.n > 10 || (f.n > 1 && f.p[0] == '0')) return false;
    uint32_t v = 0;
    for (size_t i = 0; i < f.n; i++) {
      if (f.p[i] < '0' || f.p[i] > '9') return false;
      uint32_t d = static_cast<uint32_t>(f.p[i] - '0');
      if (v > (max - d) / 10) return false;
      v = v * 10 + d;
    }
    *out = v;
    return true;
  }

  static bool parseId(const Field& f, bool zeroOK, uint16_t* id) {
    uint32_t v;
    if (!parseNum(f, 65535, &v) || (v == 0 && !zeroOK)) return false;
    *id = static_cast<uint16_t>(v);
    return true;
  }

  // dispatch handles a checked frame; args points past the verb, nargs
  // fields long.
  void dispatch(Field* f, size_t nargs) {
    const Field& verb = f[0];
    Field* a = f + 1;
    uint16_t id;
    if (verb.is("MSG")) {
      if (nargs < 6) return malformed("MSG needs 6 fields");
      return handleMsg(a);
    }
    if (verb.is("ACK")) {
      if (nargs < 1 || !parseId(a[0], false, &id)) return malformed("ACK id");
      for (size_t i = 0; i < MaxPending; i++) {
        if (pending_[i].used && pending_[i].id == id) {
          pending_[i].used = false;
          if (onAck_) onAck_(id);
        }
      }
      return;  // an ACK for a resend already acknowledged
    }
    if (verb.is("SUBACK") || verb.is("UNSUBACK")) {
      bool un = verb.is("UNSUBACK");
      if (nargs < (un ? 1u : 2u) || !parseId(a[0], false, &id)) return malformed("SUBACK id");
      for (size_t i = 0; i < MaxSubs; i++) {
        Sub& s = subs_[i];
        if (s.id != id) continue;
        if (!un && s.state == kSubscribing) {
          s.state = kSubscribed;
          s.id = 0;
        } else if (un && s.state == kUnsubscribing) {
          s.state = kFree;
          s.id = 0;
        }
      }
      return;
    }
    if (verb.is("NAK")) {
      if (nargs < 2 || !parseId(a[0], false, &id)) return malformed("NAK id");
      // Safe to overwrite: the byte after the field is a ',' or the '*'.
      a[1].p[a[1].n] = 0;
      const char* reason = a[1].p;
      bool known = false;
      for (size_t i = 0; i < MaxPending; i++) {
        if (pending_[i].used && pending_[i].id == id) {
          pending_[i].used = false;
          known = true;
        }
      }
      for (size_t i = 0; i < MaxSubs; i++) {
        if (subs_[i].state != kFree && subs_[i].id == id) {
          // A refused filter is forgotten: re-sending it every session
          // would only be refused again.
          subs_[i].state = kFree;
          subs_[i].id = 0;
          known = true;
        }
      }
      if (known) {
        logLine("gateway refused id ", ": ", id, true, reason);
        if (onNak_) onNak_(id, reason);
      }
      return;
    }
    if (verb.is("PING")) return sendFrame("PONG");
    if (verb.is("PONG")) return;
    if (verb.is("HELLO")) return handleHello(a, nargs);
    malformed("unknown verb");
  }

  void handleHello(Field* a, size_t nargs) {
    uint32_t version, maxLine = kDefaultPeerMaxLine;
    if (nargs < 2 || !parseNum(a[0], 1000000, &version) || version < 1)
      return malformed("HELLO version");
    if (nargs >= 3 && (!parseNum(a[2], 0xFFFFFFFFu, &maxLine) || maxLine < 64))
      return malformed("HELLO max line");
    size_t nameLen;
    if (!percentDecode(a[1].p, a[1].n, reinterpret_cast<uint8_t*>(a[1].p), &nameLen))
      return malformed("HELLO port name");
    a[1].p[nameLen] = 0;
    copyStr(portName_, sizeof portName_, a[1].p);
    peerMaxLine_ = maxLine;
    // The gateway may have restarted and begun its MSG ids again: an id
    // remembered from before would make us drop a new message. A resend
    // delivered twice is the lesser evil (delivery is at least once).
    ackedCount_ = 0;
    if (!begun_) return;  // begin() will send our HELLO
    if (waitingHello_) {
      waitingHello_ = false;
      sessionUp_ = true;
      logLine("session up on port ", portName_);
      for (size_t i = 0; i < MaxSubs; i++) {
        Sub& s = subs_[i];
        if (s.state == kSubscribed) s.state = kSubscribing;
        if (s.state != kFree) sendSub(&s);
      }
    } else {
      // A HELLO we did not ask for: the gateway (re)opened the port and
      // knows nothing about us.
      sessionUp_ = false;
      sendHello();
    }
  }

  void handleMsg(Field* a) {
    uint16_t id;
    if (!parseId(a[0], true, &id)) return malformed("MSG id");
    uint8_t qos;
    if (a[1].is("0")) {
      qos = 0;
    } else if (a[1].is("1") || a[1].is("2")) {
      qos = 1;
    } else {
      return malformed("MSG QoS");
    }
    if (qos && id == 0) return malformed("MSG id 0 with QoS 1");
    bool retain;
    if (a[2].is("0")) {
      retain = false;
    } else if (a[2].is("1")) {
      retain = true;
    } else {
      return malformed("MSG retain");
    }
    uint8_t* topic = reinterpret_cast<uint8_t*>(a[3].p);
    size_t topicLen;
    if (!percentDecode(a[3].p, a[3].n, topic, &topicLen)) return malformed("MSG topic");
    if (memchr(topic, 0, topicLen)) return malformed("NUL in MSG topic");
    uint8_t* payload = reinterpret_cast<uint8_t*>(a[5].p);
    size_t len;
    bool ok;
    if (a[4].is("t")) {
      ok = percentDecode(a[5].p, a[5].n, payload, &len);
    } else if (a[4].is("b")) {
      ok = base64Decode(a[5].p, a[5].n, payload, &len);
    } else {
      return malformed("MSG payload encoding");
    }
    if (!ok) return malformed("MSG payload");
    // Both terminators land on bytes already consumed: a separator, the
    // '*', or a byte the decoding freed.
    topic[topicLen] = 0;
    payload[len] = 0;
    if (qos && remembered(id)) {
      sendFrame("ACK", id, true);  // our earlier ACK was lost
      return;
    }
    if (onMessage_) onMessage_(reinterpret_cast<const char*>(topic), payload, len, retain);
    if (qos) {
      remember(id);
      sendFrame("ACK", id, true);
    }
  }

  bool remembered(uint16_t id) const {
    for (size_t i = 0; i < ackedCount_; i++) {
      if (acked_[i] == id) return true;
    }
    return false;
  }

  void remember(uint16_t id) {
    acked_[ackedNext_] = id;
    ackedNext_ = (ackedNext_ + 1) % RememberedIds;
    if (ackedCount_ < RememberedIds) ackedCount_++;
  }

  WriteFn write_;
  void* ctx_;
#ifdef ARDUINO
  Stream* stream_;
#endif
  MessageFn onMessage_;
  AckFn onAck_;
  NakFn onNak_;
  bool log_;
  uint32_t resendMs_;
  uint32_t keepaliveMs_;
  uint32_t boot_;

  char boardId_[48];
  char firmware_[48];
  char portName_[48];
  size_t peerMaxLine_;
  bool begun_;
  bool waitingHello_;
  bool helloStamped_;
  uint32_t helloSentAt_;
  bool sessionUp_;

  bool sentSinceLoop_;
  uint32_t lastSentAt_;
  bool broken_;

  uint16_t nextId_;
  Pending pending_[MaxPending];
  Sub subs_[MaxSubs];
  uint16_t acked_[RememberedIds];
  size_t ackedNext_;
  size_t ackedCount_;

  char rx_[MaxLine + 1];
  size_t rxLen_;
  bool rxSkip_;
  bool rxOver_;
  char scratch_[MaxLine + 1];
  Stats stats_;
};

typedef Client<> RalphSerial;

}  // namespace ralph

#endif  // RALPH_SERIAL_H
