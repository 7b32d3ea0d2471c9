// serial_board: an ESP32 that publishes and subscribes through Ralph over
// its USB serial port, without Wi-Fi.
//
// Every 10 s it publishes the chip's temperature to "temp" with QoS 1, and
// it switches LED_BUILTIN on "on" and "off" messages on "cmd/led". Both
// topics are relative to the topic prefix Ralph's config gives the port:
// with "devices/kitchen/", they are devices/kitchen/temp and
// devices/kitchen/cmd/led on the broker, e.g.
//
//     mosquitto_pub -h <gateway> -t devices/kitchen/cmd/led -m on
//
// Install the library first: copy (or link) the serialin/esp32 folder to
// your Arduino libraries folder as "RalphSerial". Do not open a serial
// monitor on the port while Ralph has it.

#include <RalphSerial.h>

#ifndef LED_BUILTIN
#define LED_BUILTIN 2  // most ESP32 DevKit boards
#endif

ralph::RalphSerial gateway(Serial);

const uint32_t kPublishEveryMs = 10000;
uint32_t lastPublish = 0;

void onMessage(const char* topic, const uint8_t* payload, size_t len, bool retain) {
  if (strcmp(topic, "cmd/led") != 0) return;
  bool on;
  if (len == 2 && memcmp(payload, "on", 2) == 0) {
    on = true;
  } else if (len == 3 && memcmp(payload, "off", 3) == 0) {
    on = false;
  } else {
    Serial.printf("cmd/led: expected on or off, got %u bytes\n", (unsigned)len);
    return;
  }
  digitalWrite(LED_BUILTIN, on ? HIGH : LOW);
  Serial.printf("LED %s%s\n", on ? "on" : "off", retain ? " (retained)" : "");
}

void onNak(uint16_t id, const char* reason) {
  // "denied" usually means the port's topic prefix or ACL does not allow
  // the topic.
  Serial.printf("gateway refused request %u: %s\n", id, reason);
}

void setup() {
  Serial.begin(115200);
  pinMode(LED_BUILTIN, OUTPUT);

  // Plain prints are fine: any line that does not start with "$R" is the
  // board's log, which Ralph writes to its own log. End each with a
  // newline, so that a frame never starts in the middle of a line.
  Serial.println("serial_board starting");

  // The last three bytes of the MAC address make a stable board id.
  uint64_t mac = ESP.getEfuseMac();
  char boardId[16];
  snprintf(boardId, sizeof boardId, "esp32-%02x%02x%02x", (unsigned)(mac >> 24 & 0xFF),
           (unsigned)(mac >> 32 & 0xFF), (unsigned)(mac >> 40 & 0xFF));

  gateway.onMessage(onMessage);
  gateway.onNak(onNak);
  gateway.subscribe("cmd/led", 1);  // sent, and re-sent, once Ralph answers HELLO
  gateway.begin(boardId, "1.0.0");
}

void loop() {
  gateway.loop();  // reads Serial, delivers messages, resends, keeps alive

  uint32_t now = millis();
  if (now - lastPublish >= kPublishEveryMs) {
    lastPublish = now;
    char value[16];
    snprintf(value, sizeof value, "%.1f", temperatureRead());
    if (gateway.publishText("temp", value, 1)) {
      Serial.printf("temp %s C\n", value);
    } else {
      // Eight earlier readings are still waiting for Ralph's ACK (is it
      // running?): skip this one rather than block.
      Serial.println("temp not sent: the gateway has not acknowledged earlier readings");
    }
  }
}
