/** The contract's error codes, free of imports: workflows use this list too. */
export const ERROR_CODES = ['INVALID_REQUEST', 'NOT_FOUND', 'CAPACITY_TIMEOUT', 'BUILD_FAILED', 'UNAVAILABLE', 'INTERNAL'] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];
