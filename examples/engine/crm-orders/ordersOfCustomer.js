'use strict'

// A custom strategy (docs/outputs.md#strategies): the factory gets (logger, databaseName) once, the function it
// returns gets each changed customer document and a read-only MongoDB client, and resolves to
// the identifiers of the sv_order_summaries single views to rebuild.
module.exports = function ordersOfCustomer(logger, databaseName) {
  return async function (customer, mongoClient) {
    const orders = await mongoClient.db(databaseName).collection('pr_orders')
      .find({ customer_id: customer.customer_id, __STATE__: 'PUBLIC' })
      .toArray()
    logger.debug({ customer: customer.customer_id, orders: orders.length }, 'order summaries to rebuild')
    return orders.map((order) => ({ orderId: order.order_id }))
  }
}
