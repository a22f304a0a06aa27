// Types for chat-format.js, for TypeScript importers such as test/browser.test.ts.

/** The page's transcript template for models whose file has no `tokenizer.chat_template`. */
export declare const PLAIN_TEMPLATE: string;
/** Stop strings that go with PLAIN_TEMPLATE. */
export declare const PLAIN_STOP: string[];
