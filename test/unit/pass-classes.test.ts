import { test } from "node:test";
import assert from "node:assert/strict";
import {
  choosePassClass,
  choosePassSocket,
  parsePassClasses,
} from "../../src/handoff/classes.js";
import { buildConfig, ConfigError } from "../../src/config/load.js";
import { AccessList } from "../../src/access/access-list.js";
import { parseNetworkList } from "../../src/access/network.js";

const QUEUE = "/var/spool/postfix";

test("pass classes parse service forms", () => {
  const classes = parsePassClasses(
    "trusted = smtpd-trusted, strict=public/smtpd-strict",
    QUEUE,
  );
  assert.deepEqual(classes, {
    trusted: {
      path: "/var/spool/postfix/private/smtpd-trusted",
      label: "private/smtpd-trusted",
    },
    strict: {
      path: "/var/spool/postfix/public/smtpd-strict",
      label: "public/smtpd-strict",
    },
  });
  assert.deepEqual(parsePassClasses("strict = /run/strict.sock", QUEUE), {
    strict: { path: "/run/strict.sock", label: "/run/strict.sock" },
  });
  assert.deepEqual(parsePassClasses("", QUEUE), {});
});

test("pass classes reject bad items", () => {
  const cases: [string, RegExp][] = [
    ["friendly = smtpd-x", /unknown class "friendly".*trusted or strict/],
    ["trusted =", /missing service for class "trusted"/],
    ["trusted", /missing service for class "trusted"/],
    ["trusted = a, trusted = b", /class "trusted" is set twice/],
    ["strict = private/", /invalid service "private\/"/],
    ["strict = ../smtpd", /invalid service "..\/smtpd"/],
  ];
  for (const [value, message] of cases) {
    assert.throws(() => parsePassClasses(value, QUEUE), message, value);
  }
});

test("pass classes config error", () => {
  try {
    buildConfig([
      {
        name: "listen",
        value: "127.0.0.1:25",
        origin: { file: "t.cf", line: 1 },
      },
      {
        name: "smtpd_pass_classes",
        value: "gold = smtpd-gold",
        origin: { file: "t.cf", line: 2 },
      },
    ]);
    assert.fail("expected a ConfigError");
  } catch (error) {
    assert.ok(error instanceof ConfigError);
    assert.match(
      error.problems.join("\n"),
      /t\.cf:2: smtpd_pass_classes: unknown class "gold"/,
    );
  }
});

test("pass class from verdict", () => {
  const accessList = AccessList.parse(
    ["permit_mynetworks"],
    parseNetworkList("192.0.2.0/24"),
  );
  const config = { accessList };
  const facts = { dnsAllowlisted: false, dnsblScore: 0 };
  assert.equal(
    choosePassClass(config, { ...facts, address: "192.0.2.9" }),
    "trusted",
  );
  assert.equal(
    choosePassClass(config, {
      ...facts,
      address: "198.51.100.1",
      dnsAllowlisted: true,
    }),
    "trusted",
  );
  assert.equal(
    choosePassClass(config, {
      ...facts,
      address: "198.51.100.1",
      dnsblScore: 1,
    }),
    "strict",
  );
  assert.equal(
    choosePassClass(config, {
      ...facts,
      address: "198.51.100.1",
      dnsblScore: -1,
    }),
    undefined,
  );
  assert.equal(
    choosePassClass(config, { ...facts, address: "198.51.100.1" }),
    undefined,
  );
});

test("pass socket default and logged class", () => {
  const lines: string[] = [];
  const logger = {
    info: (line: string) => lines.push(line),
    warning: (line: string) => lines.push(line),
    error: (line: string) => lines.push(line),
  };
  const accessList = AccessList.parse([], []);
  const base = { accessList, smtpdPassSocket: "/q/private/smtpd" };
  const strictFacts = () => ({
    address: "198.51.100.1",
    dnsAllowlisted: false,
    dnsblScore: 2,
  });

  let factsRequested = false;
  const path = choosePassSocket(
    { ...base, passClasses: {} },
    logger,
    "[198.51.100.1]:1000",
    () => {
      factsRequested = true;
      return strictFacts();
    },
  );
  assert.equal(path, "/q/private/smtpd");
  assert.equal(factsRequested, false, "facts were computed without classes");

  const onlyTrusted = {
    ...base,
    passClasses: { trusted: { path: "/q/private/t", label: "private/t" } },
  };
  assert.equal(
    choosePassSocket(onlyTrusted, logger, "[198.51.100.1]:1000", strictFacts),
    "/q/private/smtpd",
  );
  assert.deepEqual(lines, []);

  const withStrict = {
    ...base,
    passClasses: { strict: { path: "/q/private/s", label: "private/s" } },
  };
  assert.equal(
    choosePassSocket(withStrict, logger, "[198.51.100.1]:1000", strictFacts),
    "/q/private/s",
  );
  assert.deepEqual(lines, [
    "pass class strict for [198.51.100.1]:1000: service private/s",
  ]);
});
