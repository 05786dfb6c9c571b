/**
 * tiermesh browser client: MoQT draft-16 over WebTransport, with a WebCodecs player and
 * publisher. See README.md for the API.
 */
export * from './wire/coding.js';
export * from './wire/kvp.js';
export * from './wire/message.js';
export * from './wire/data.js';
export * from './wire/ext.js';
export * from './wire/catalog.js';
export * from './transport.js';
export * from './session.js';
export * from './media/abr.js';
export * from './media/switcher.js';
export * from './media/jitter.js';
export * from './media/barcode.js';
export * from './media/player.js';
export * from './media/publisher.js';
export * from './media/ladder.js';
