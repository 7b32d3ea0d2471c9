// crosscheck drives RalphSerial.h from stdin so that a Go test can check it
// against serialin/line. One command per line; "-" stands for empty hex:
//
//   begin <board-id> <firmware>      log <0|1>         nextid <n>
//   crc <hex>                        -> crc XXXX
//   pub <qos> <retain> <topic-hex> <payload-hex>  -> ok <id> | fail
//   pubtext <qos> <retain> <topic-hex> <text-hex>  -> ok <id> | fail
//   sub <qos> <filter-hex> | unsub <filter-hex>   -> ok | fail
//   feed <hex>                       bytes as if received from the gateway
//   loop <ms>                        run the timers at this time
//   limit <n>                        writes accept n more bytes (-1: all)
//   pending | stats | session
//
// Every call of the write function prints "w <hex>", each callback a line
// ("msg <topic-hex> <payload-hex> <retain>", "ack <id>", "nak <id> <reason>"),
// and each command ends with a line ".".
#include <stdio.h>

#include <iostream>
#include <sstream>
#include <string>

#include "../RalphSerial.h"

static long writeLimit = -1;

static void printHex(const uint8_t* p, size_t n) {
  if (n == 0) fputs("-", stdout);
  for (size_t i = 0; i < n; i++) printf("%02x", p[i]);
}

static std::string unhex(const std::string& h) {
  std::string out;
  if (h == "-") return out;
  for (size_t i = 0; i + 1 < h.size(); i += 2) {
    out += static_cast<char>(ralph::hexValue(static_cast<uint8_t>(h[i])) << 4 |
                             ralph::hexValue(static_cast<uint8_t>(h[i + 1])));
  }
  return out;
}

static size_t writeOut(const uint8_t* p, size_t n, void*) {
  if (writeLimit >= 0 && static_cast<long>(n) > writeLimit) n = static_cast<size_t>(writeLimit);
  if (writeLimit >= 0) writeLimit -= static_cast<long>(n);
  if (n == 0) return 0;
  fputs("w ", stdout);
  printHex(p, n);
  fputs("\n", stdout);
  return n;
}

static void onMessage(const char* topic, const uint8_t* payload, size_t len, bool retain) {
  fputs("msg ", stdout);
  printHex(reinterpret_cast<const uint8_t*>(topic), strlen(topic));
  fputs(" ", stdout);
  printHex(payload, len);
  printf(" %d%s\n", retain ? 1 : 0, payload[len] == 0 ? "" : " unterminated");
}

static void onAck(uint16_t id) { printf("ack %u\n", id); }

static void onNak(uint16_t id, const char* reason) { printf("nak %u %s\n", id, reason); }

int main() {
  static ralph::RalphSerial r(writeOut, 0);
  r.onMessage(onMessage);
  r.onAck(onAck);
  r.onNak(onNak);
  // The defaults, set anyway so that the setters compile here too.
  r.setResendInterval(2000);
  r.setKeepalive(10000);
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::string cmd, a, b, c, d;
    in >> cmd >> a >> b >> c >> d;
    if (cmd == "begin") {
      r.begin(a.c_str(), b == "-" ? "" : b.c_str(), c.empty() ? 0 : static_cast<uint32_t>(std::stoul(c)));
    } else if (cmd == "log") {
      r.setLog(a == "1");
    } else if (cmd == "nextid") {
      r.setNextId(static_cast<uint16_t>(std::stoul(a)));
    } else if (cmd == "crc") {
      std::string p = unhex(a);
      printf("crc %04X\n", ralph::crc16(reinterpret_cast<const uint8_t*>(p.data()), p.size()));
    } else if (cmd == "pub") {
      std::string topic = unhex(c), payload = unhex(d);
      uint16_t id = 0;
      bool ok = r.publish(topic.c_str(), reinterpret_cast<const uint8_t*>(payload.data()),
                          payload.size(), static_cast<uint8_t>(std::stoul(a)), b == "1", &id);
      if (ok) {
        printf("ok %u\n", id);
      } else {
        puts("fail");
      }
    } else if (cmd == "pubtext") {
      std::string topic = unhex(c), text = unhex(d);
      uint16_t id = 0;
      bool ok = r.publishText(topic.c_str(), text.c_str(), static_cast<uint8_t>(std::stoul(a)),
                              b == "1", &id);
      if (ok) {
        printf("ok %u\n", id);
      } else {
        puts("fail");
      }
    } else if (cmd == "sub") {
      puts(r.subscribe(unhex(b).c_str(), static_cast<uint8_t>(std::stoul(a))) ? "ok" : "fail");
    } else if (cmd == "unsub") {
      puts(r.unsubscribe(unhex(a).c_str()) ? "ok" : "fail");
    } else if (cmd == "feed") {
      std::string p = unhex(a);
      r.feed(reinterpret_cast<const uint8_t*>(p.data()), p.size());
    } else if (cmd == "loop") {
      r.loop(static_cast<uint32_t>(std::stoul(a)));
    } else if (cmd == "limit") {
      writeLimit = std::stol(a);
    } else if (cmd == "pending") {
      printf("pending %u\n", static_cast<unsigned>(r.pending()));
    } else if (cmd == "stats") {
      const ralph::Stats& s = r.stats();
      printf("stats crc=%u malformed=%u oversize=%u resent=%u\n", s.badCrc, s.malformed,
             s.oversize, s.resent);
    } else if (cmd == "session") {
      printf("session %d %s\n", r.sessionUp() ? 1 : 0, r.portName());
    } else {
      printf("unknown command %s\n", cmd.c_str());
    }
    puts(".");
    fflush(stdout);
  }
  return 0;
}
