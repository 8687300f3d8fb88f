// The host side of the sandbox, evaluated once per context before any user module. It receives
// the two native functions of the host and defines the non-writable global `__rtu` the Rust
// side reads: the loaded functions, their loggers, the cached strategy functions, and helpers.
(function (log, lookup) {
  'use strict';

  function render(arg) {
    if (typeof arg === 'string') return arg;
    if (arg instanceof Error) return arg.stack ? `${arg}\n${arg.stack.trimEnd()}` : String(arg);
    try {
      const json = JSON.stringify(arg);
      return json === undefined ? String(arg) : json;
    } catch (e) {
      return String(arg);
    }
  }

  function logger(name) {
    const emit = (level) => (...args) => log(level, name, args.map(render).join(' '));
    const self = {
      trace: emit('trace'), debug: emit('debug'), info: emit('info'), warn: emit('warn'),
      error: emit('error'), fatal: emit('error'), log: emit('info'),
      child: () => self,
    };
    return Object.freeze(self);
  }

  function require(id) {
    throw new Error(`require('${id}') is not available: custom functions run in a sandbox ` +
      'without modules, filesystem, network or process');
  }

  // A Uint8Array whose toString() is the UTF-8 text, as far as user code sees a Node Buffer.
  function buffer(bytes, text) {
    Object.defineProperty(bytes, 'toString', { value: () => text });
    return bytes;
  }

  // The read-only `mongoClient` of a strategy: look-ups resolve synchronously in the host.
  function client(defaultDb) {
    const collection = (db, name) => Object.freeze({
      findOne: async (filter, options) => lookup('findOne', db, name, filter, options),
      find: (filter, options) => Object.freeze({
        toArray: async () => lookup('find', db, name, filter, options),
      }),
      countDocuments: async (filter, options) => lookup('countDocuments', db, name, filter, options),
    });
    const database = (name) => Object.freeze({
      databaseName: name,
      collection: (c) => collection(name, String(c)),
    });
    return Object.freeze({ db: (name) => database(name === undefined ? defaultDb : String(name)) });
  }

  Object.defineProperty(globalThis, 'console', { value: logger('console') });
  Object.defineProperty(globalThis, '__rtu', {
    value: Object.freeze({
      functions: {}, loggers: {}, strategies: {}, logger, require, buffer, client,
    }),
  });
})
