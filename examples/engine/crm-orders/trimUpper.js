'use strict'

// A custom cast (docs/writes.md#cast-functions): (value, fieldName, logger) -> the value to store.
module.exports = function trimUpper(value, fieldName, logger) {
  if (value === null || value === undefined) return null
  return String(value).trim().toUpperCase()
}
